"""Issue 13: jobs ride out dependency outages and fail only for their own reasons."""

from __future__ import annotations

import time
from pathlib import Path

from sightline_gateway.clients.retry import RetryPolicy

from tests.unit.gateway.gateway_fixtures import harness, token


def wait_done(h, study_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = h.client.get(f"/v1/studies/{study_id}", headers=token()).json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError("study did not finish")


def audit_actions(h) -> list[str]:
    r = h.client.get("/v1/audit", params={"limit": 500}, headers=token(roles=("auditor",)))
    assert r.status_code == 200, r.text
    return [e["action"] for e in r.json()["events"]]


def test_retry_policy_backs_off_with_jitter_up_to_the_cap_and_stops_at_the_budget() -> None:
    policy = RetryPolicy(budget_s=900, first_s=1, cap_s=30)
    delays = [policy.next_delay(n, 0) for n in range(1, 30)]
    assert all(d is not None and 0 < d <= 30 for d in delays)
    assert max(d for d in delays if d is not None) > 15  # it does grow to the cap
    assert len({round(d or 0, 6) for d in delays[10:]}) > 1  # jittered, not one wave
    assert policy.next_delay(3, 899.5) == 0.5  # the last attempt still falls inside the budget
    assert policy.next_delay(3, 900) is None


def test_a_job_rides_out_an_outage_longer_than_five_attempts(tmp_path: Path) -> None:
    # Today's main gave up after 5 attempts ("gave up after 5 attempts: preprocess unavailable").
    with harness(tmp_path, job_retry_budget_s=30, job_backoff_max_s=0.05) as h:
        h.preprocess.fail_times = 12
        r = h.submit()
        study = wait_done(h, r.json()["id"])
        assert study["status"] == "completed", study
        assert h.preprocess.calls == 13


def test_an_exhausted_budget_fails_the_study_with_that_reason_in_result_and_audit(tmp_path: Path) -> None:
    with harness(tmp_path, job_retry_budget_s=0.3, job_backoff_max_s=0.05) as h:
        h.preprocess.fail_times = 10_000
        study = wait_done(h, h.submit().json()["id"])
        assert study["status"] == "failed"
        assert "retry budget of 0.3s exhausted" in study["error"]["detail"]
        result = h.client.get(f"/v1/studies/{study['id']}/result", headers=token())
        assert result.status_code == 404 and result.json()["error_code"] == "dependency-unavailable"
        assert "study.fail.retry-budget-exhausted" in audit_actions(h)


def test_bad_content_fails_at_once_and_the_audit_says_why(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        h.preprocess.refuse = True
        study = wait_done(h, h.submit().json()["id"])
        assert study["status"] == "failed" and study["error"]["code"] == "unprocessable"
        assert h.preprocess.calls == 1
        assert "study.fail.unprocessable" in audit_actions(h)
