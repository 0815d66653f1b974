"""Issue 13: a submission rides out a de-identification outage shorter than its budget.

De-identification runs inside the submitting request (identified bytes are never queued), so it
is retried there by time (deid_retry_budget_s, below the sync timeout), not by a count of three
quick attempts; past the budget the caller gets 503 with Retry-After and nothing is stored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sightline_common.errors import DependencyUnavailable

from tests.unit.gateway.gateway_fixtures import harness


class FlakyDeid:
    """The real (in-process) deid behind an outage that ends ``down_s`` after the first call."""

    def __init__(self, inner: Any, down_s: float) -> None:
        self.inner, self.down_s, self.calls = inner, down_s, 0
        self.first: float | None = None

    async def deidentify(self, data: bytes, tenant: str) -> Any:
        self.calls += 1
        self.first = self.first or time.monotonic()
        if time.monotonic() - self.first < self.down_s:
            raise DependencyUnavailable("deid unavailable (restarting)")
        return await self.inner.deidentify(data, tenant)


def _flaky(h: Any, down_s: float) -> FlakyDeid:
    intake = h.client.app.state.gateway.pipeline.intake
    intake.deid = FlakyDeid(intake.deid, down_s)
    return intake.deid  # type: ignore[no-any-return]


def test_a_deid_restart_within_the_budget_is_ridden_out(tmp_path: Path) -> None:
    with harness(tmp_path, deid_retry_budget_s=5.0, job_backoff_s=1.0) as h:
        deid = _flaky(h, down_s=1.5)
        r = h.submit(mode="sync")
        assert r.status_code == 200, r.text
        assert deid.calls > 3  # more than the three quick attempts it used to get


def test_past_the_budget_the_caller_gets_503_and_nothing_is_stored(tmp_path: Path) -> None:
    with harness(tmp_path, deid_retry_budget_s=1.0, job_backoff_s=1.0) as h:
        _flaky(h, down_s=3600)
        start = time.monotonic()
        r = h.submit(headers={"Idempotency-Key": "deid-down-1"})
        elapsed = time.monotonic() - start
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1, r.text
        assert 0.5 <= elapsed < 5.0
        assert not list(h.store.list("studies/"))


def test_the_budget_must_fit_the_sync_timeout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="below sync_timeout_s"):
        with harness(tmp_path, deid_retry_budget_s=60.0, sync_timeout_s=30.0):
            pass
