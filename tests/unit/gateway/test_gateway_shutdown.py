"""Issue 13: graceful shutdown (SIGTERM runs the app's shutdown): stop claiming, finish the job in
hand within the grace period or hand its lease back; never lose a study, never two results."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sightline_common.storage import LocalDirStore
from sightline_gateway.app import Dependencies, create_app
from sightline_gateway.server import server

from tests.conftest import free_ports
from tests.unit.gateway.gateway_fixtures import (
    FakeExplain,
    FakePreprocess,
    app_on_fakes,
    harness,
    jobs_and_results,
    phi_dicom,
    settings,
    token,
)


def _db(tmp_path: Path) -> tuple[list[tuple[str, str | None]], int]:
    jobs, results = jobs_and_results(tmp_path)
    return [(j.status, j.lease_owner) for j in jobs], results


def _shut_down_while_running(tmp_path: Path, delay_s: float, grace_s: float) -> str:
    with harness(tmp_path, shutdown_grace_s=grace_s) as h:
        h.preprocess.delay_s = delay_s
        study_id = h.submit().json()["id"]
        deadline = time.monotonic() + 5
        while h.preprocess.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.preprocess.calls == 1  # the job is in hand
        started = time.monotonic()
    assert time.monotonic() - started < grace_s + 5  # leaving the block ran the shutdown
    return study_id


def test_shutdown_finishes_the_job_in_hand_within_the_grace_period(tmp_path: Path) -> None:
    _shut_down_while_running(tmp_path, delay_s=0.5, grace_s=10)
    jobs, results = _db(tmp_path)
    assert jobs == [("succeeded", None)] and results == 1


def test_shutdown_hands_the_lease_back_when_the_grace_period_ends_and_another_gateway_finishes(
    tmp_path: Path,
) -> None:
    # Before: the job stayed "running" under the dead worker's lease for job_lease_s (120 s).
    study_id = _shut_down_while_running(tmp_path, delay_s=30, grace_s=0.3)
    jobs, results = _db(tmp_path)
    assert jobs == [("queued", None)] and results == 0
    with harness(tmp_path) as h:  # the next replica (same database and object store)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if h.client.get(f"/v1/studies/{study_id}", headers=token()).json()["status"] == "completed":
                break
            time.sleep(0.05)
    jobs, results = _db(tmp_path)
    assert jobs == [("succeeded", None)] and results == 1


def test_sigterm_answers_a_waiting_sync_request_and_the_server_exits_within_the_grace_period(
    tmp_path: Path,
) -> None:
    """The real server (uvicorn) given SIGTERM while a synchronous request waits on a stuck job.

    Before: uvicorn drained connections before the app heard of the signal, so the request held
    the process until its sync_timeout_s (60 s) and the workers' grace period began only after
    that; a kubelet would have killed the pod first. Now the caller gets 202 with the study's
    Location at once, the lease is handed back when the grace period ends, and the process exits.
    """
    grace_s = 2.0
    port = free_ports(1)[0]
    s = settings(tmp_path, shutdown_grace_s=grace_s, sync_timeout_s=60, host="127.0.0.1", port=port)
    app, _, preprocess, _ = app_on_fakes(s)
    preprocess.delay_s = 60  # the job in hand will not finish within the grace period
    srv = server(app, s)
    thread = _start(srv)
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            httpx.post, f"http://127.0.0.1:{port}/v1/studies", params={"mode": "sync"}, content=phi_dicom(),
            headers={"Content-Type": "application/dicom", **token()}, timeout=120,
        )
        while preprocess.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert preprocess.calls == 1  # the request waits on a job in hand
        signalled = time.monotonic()
        srv.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
        response = answer.result(timeout=90)
        answered_s = time.monotonic() - signalled
    thread.join(timeout=90)
    exited_s = time.monotonic() - signalled
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/studies/{response.json()['id']}"
    assert answered_s < 1.5, f"the waiting request was answered {answered_s:.1f}s after SIGTERM"
    assert not thread.is_alive() and exited_s < grace_s + 3, f"exited {exited_s:.1f}s after SIGTERM"
    jobs, results = _db(tmp_path)
    assert jobs == [("queued", None)] and results == 0  # handed back for the next replica


class _StuckDeid:
    """A de-identification call that does not return within the grace period."""

    def __init__(self) -> None:
        self.calls = 0

    async def deidentify(self, dicom: bytes, tenant: str, *, generalise: bool = False) -> Any:
        self.calls += 1
        await asyncio.sleep(120)
        raise AssertionError("unreachable")


def test_a_request_cut_by_the_end_of_the_grace_period_is_answered_503_not_500(tmp_path: Path) -> None:
    """Before: uvicorn cancelled the request and answered 500 (a bug of ours, to the caller)."""
    port = free_ports(1)[0]
    s = settings(tmp_path, shutdown_grace_s=1.0, host="127.0.0.1", port=port)
    deid, store = _StuckDeid(), LocalDirStore(s.storage_dir)
    deps = Dependencies(deid=deid, preprocess=FakePreprocess(), explain=FakeExplain(store), store=store)
    srv = server(create_app(s, deps), s)
    thread = _start(srv)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            httpx.post, f"http://127.0.0.1:{port}/v1/studies", content=phi_dicom(),
            headers={"Content-Type": "application/dicom", "Idempotency-Key": "cut-1", **token()},
            timeout=60,
        )
        deadline = time.monotonic() + 10
        while deid.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert deid.calls == 1
        srv.handle_exit(signal.SIGTERM, None)
        response = answer.result(timeout=30)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json()["code"] == "shutting-down"
    jobs, results = _db(tmp_path)
    assert jobs == [] and results == 0  # nothing half-stored: the retry starts afresh


def _start(srv: Any) -> threading.Thread:
    """Run a uvicorn server in a thread (no signal handlers there: the test calls handle_exit,
    which is what SIGTERM's handler calls) and return once it serves."""
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    return thread
