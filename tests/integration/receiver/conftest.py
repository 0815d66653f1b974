"""A gateway on loopback (fakes for preprocess and explain, the real deid app) for the receiver to feed."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import free_ports, skip_or_fail_in_ci
from tests.unit.gateway.gateway_fixtures import FakeExplain, FakePreprocess, app_on_fakes, settings, token


def dicom_tool(name: str) -> str:
    """The path of a DCMTK tool; skip (fail under CI=true) when Debian's dcmtk is not installed."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail_in_ci(f"{name} not installed (make tools: scripts/get-dicom-tools.sh installs dcmtk)")
    return path


@dataclass
class LiveGateway:
    url: str
    preprocess: FakePreprocess
    explain: FakeExplain
    data_dir: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = token(roles=("clinician",))
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def wait_completed(self, study_path: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            study = self.get(study_path).json()
            if study["status"] in ("completed", "failed"):
                return dict(study)
            time.sleep(0.2)
        raise AssertionError(f"study {study_path} did not finish in {timeout_s}s")


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    """The gateway app on a free loopback port, served by uvicorn in a thread."""
    with serve_gateway(tmp_path) as gateway:
        yield gateway


@contextmanager
def serve_gateway(
    tmp_path: Path, explain: Callable[[Any], FakeExplain] = FakeExplain, **overrides: Any
) -> Iterator[LiveGateway]:
    """The gateway (settings ``overrides``) on a free loopback port, served by uvicorn in a thread."""
    (port,) = free_ports(1)
    app, _, pre, exp = app_on_fakes(settings(tmp_path / "gateway", port=port, **overrides), explain)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "gateway did not start"
        time.sleep(0.05)
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", pre, exp, tmp_path / "gateway")
    finally:
        server.should_exit = True
        thread.join(timeout=15)
