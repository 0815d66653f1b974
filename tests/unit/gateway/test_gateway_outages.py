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


class Switch:
    """A readiness check a test turns on and off."""

    def __init__(self, up: bool = True) -> None:
        self.up = up

    async def __call__(self) -> bool:
        return self.up


def test_workers_hold_jobs_while_preprocess_is_not_ready_and_resume_when_it_is(tmp_path: Path) -> None:
    ready = Switch(up=False)
    overrides = {"job_backoff_max_s": 0.05, "dependency_probe_s": 0.05}
    with harness(tmp_path, ready={"preprocess": ready}, **overrides) as h:
        h.preprocess.fail_times = 10_000
        study_id = h.submit().json()["id"]
        time.sleep(1.0)
        assert h.preprocess.calls <= 1  # not an attempt every 50 ms while its circuit is open
        assert h.client.get(f"/v1/studies/{study_id}", headers=token()).json()["status"] == "queued"
        h.preprocess.fail_times, ready.up = 0, True
        assert wait_done(h, study_id, timeout=5)["status"] == "completed"


def _gauge(metrics: str, dependency: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("sightline_dependency_up{") and f'dependency="{dependency}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"sightline_dependency_up for {dependency} not exported")


def test_the_gateway_stays_ready_and_accepts_studies_while_explain_and_preprocess_are_down(
    tmp_path: Path,
) -> None:
    explain, preprocess = Switch(up=False), Switch(up=False)
    with harness(
        tmp_path, ready={"explain": explain, "preprocess": preprocess}, dependency_probe_s=0.05
    ) as h:
        time.sleep(0.3)
        r = h.client.get("/health/ready")
        assert r.status_code == 200, r.text
        assert r.json()["degraded"] == ["explain", "preprocess"]
        metrics = h.client.get("/metrics").text
        assert _gauge(metrics, "explain") == 0 and _gauge(metrics, "preprocess") == 0
        assert h.submit().status_code == 202  # accepted and queued
        explain.up = preprocess.up = True
        time.sleep(0.3)
        assert h.client.get("/health/ready").json()["degraded"] == []
        assert _gauge(h.client.get("/metrics").text, "explain") == 1


def test_the_gateway_is_not_ready_without_deid(tmp_path: Path) -> None:
    with harness(tmp_path, ready={"deid": Switch(up=False)}) as h:
        assert h.client.get("/health/ready").status_code == 503


def test_a_result_delivered_while_explain_is_down_gets_its_heatmap_when_explain_is_back(
    tmp_path: Path,
) -> None:
    # Today's main: "explanation: unavailable" for good.
    explain_ready = Switch(up=True)
    overrides = {"job_backoff_max_s": 0.05, "dependency_probe_s": 0.05}
    with harness(tmp_path, ready={"explain": explain_ready}, **overrides) as h:
        h.explain.unavailable = True
        r = h.submit(mode="sync")
        assert r.status_code == 200, r.text
        assert r.json()["explanation"]["status"] == "pending"
        explain_ready.up = False
        time.sleep(0.5)
        calls_while_down = h.explain.calls
        time.sleep(0.5)
        assert h.explain.calls == calls_while_down  # the backfill waits for explain
        h.explain.unavailable, explain_ready.up = False, True
        result_url = f"/v1/studies/{r.json()['study_id']}/result"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            explanation = h.client.get(result_url, headers=token()).json()["explanation"]
            if explanation["status"] != "pending":
                break
            time.sleep(0.05)
        assert explanation["status"] == "available" and "overlay_png" in explanation["links"]
        assert "result.explanation.available" in audit_actions(h)
        assert h.client.get(f"/v1/studies/{r.json()['study_id']}", headers=token()).json()["status"] == (
            "completed"
        )


def test_a_study_that_asked_for_no_explanation_gets_none_even_after_an_outage(tmp_path: Path) -> None:
    with harness(tmp_path, job_backoff_max_s=0.05) as h:
        h.explain.unavailable = True
        r = h.submit(mode="sync", explain="false")
        assert r.status_code == 200 and r.json()["explanation"] is None
        h.explain.unavailable = False
        time.sleep(0.5)
        assert h.explain.calls == 0
        assert (
            h.client.get(f"/v1/studies/{r.json()['study_id']}/result", headers=token()).json()["explanation"]
            is None
        )
