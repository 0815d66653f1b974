"""The local stack as a user runs it: every component up, honest readiness, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sightline.stack import (
    Stack,
    StackSettings,
    StackState,
    http_ok,
    kill_component,
    restart_component,
    settings_on_free_ports,
    shm_files,
    tagged_processes,
)
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stack_settings(data_dir: Path) -> StackSettings:
    return settings_on_free_ports(data_dir, model_repository=REPO / "model_repository", ready_timeout_s=180)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, StackState]]:
    stack = Stack(stack_settings(tmp_path_factory.mktemp("stack")))
    state = stack.start()
    try:
        yield stack, state
    finally:
        stack.stop(state)


def wait_until(predicate, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"condition not met within {timeout_s}s")


def test_every_component_reports_ready(running: tuple[Stack, StackState]) -> None:
    stack, _ = running
    rows = {r["name"]: r for r in stack.status()}
    # otlp-sink receives Triton's spans for the local trace file (the default jsonl exporter).
    assert set(rows) == {"otlp-sink", "triton", "preprocess", "deid", "explain", "gateway", "receiver"}
    assert all(r["ready"] for r in rows.values()), rows


def test_status_command_reports_each_component_and_the_placeholder(running: tuple[Stack, StackState]) -> None:
    stack, _ = running
    out = subprocess.run(
        [sys.executable, "-m", "sightline.cli", "status", "--data-dir", str(stack.settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("triton", "preprocess", "deid", "explain", "gateway", "receiver"):
        assert name in out.stdout
    assert "derm-cnn" in out.stdout and "cxr-pneumonia" in out.stdout


def test_both_reference_models_are_served(running: tuple[Stack, StackState]) -> None:
    """sightline up serves every model of the repository: one Triton, preprocess, explain."""
    stack, _ = running
    s = stack.settings
    for name in ("derm-cnn", "cxr-pneumonia"):
        for port in (s.triton_http_port, s.preprocess_http_port):
            url = f"http://{s.host}:{port}/v2/models/{name}/ready"
            assert urllib.request.urlopen(url, timeout=10).status == 200, url


def test_killing_triton_makes_preprocess_not_ready_and_the_gateway_degraded_then_recover(
    running: tuple[Stack, StackState],
) -> None:
    """Readiness does not cascade: the gateway keeps accepting (and queueing) while Triton is
    down, and says which dependency is degraded; preprocess, which cannot work, is not ready."""
    stack, _ = running
    urls = {c.name: c.ready_url for c in StackState.load(stack.settings.state_file).components}
    gateway_ready = urls["gateway"]

    def gateway_reports_preprocess_degraded() -> bool:
        r = httpx.get(gateway_ready, timeout=2)
        return r.status_code == 200 and "preprocess" in json.dumps(r.json().get("degraded", {}))

    kill_component(stack.settings, "triton")
    took = wait_until(lambda: not http_ok(urls["preprocess"]) and gateway_reports_preprocess_degraded(), 15)
    assert took < 15
    assert http_ok(urls["deid"]), "deid does not depend on Triton and must stay ready"
    assert http_ok(gateway_ready), "the gateway must stay ready (it queues) while Triton is down"
    restart_component(stack, "triton")
    wait_until(lambda: http_ok(urls["preprocess"]) and not gateway_reports_preprocess_degraded(), 30)


def test_down_leaves_no_process_and_no_shared_memory(tmp_path: Path) -> None:
    stack = Stack(stack_settings(tmp_path))
    state = stack.start(only=["triton", "preprocess", "explain"])
    assert tagged_processes(state.stack_id), "the stack's processes carry its id"
    assert shm_files(state.shm_prefix), "Triton's python backend holds shared memory while running"
    stack.stop(state)
    assert tagged_processes(state.stack_id) == []
    assert shm_files(state.shm_prefix) == []
    assert not stack.settings.state_file.exists()


def test_demo_samples_reach_each_reference_model(running: tuple[Stack, StackState], tmp_path: Path) -> None:
    """`sightline up --demo`'s samples: the photograph goes to derm-cnn, the DX chest X-ray (sent as
    DICOM) to cxr-pneumonia, each with a Grad-CAM overlay from its own checkpoint."""
    from sightline.cli import _dev_token
    from sightline.demo import demo_samples, run_demo

    stack, _ = running
    settings = stack.settings
    photo, xray = demo_samples()
    assert xray.suffix == ".dcm"
    for sample, model in ((photo, "derm-cnn"), (xray, "cxr-pneumonia")):
        demo = run_demo(
            f"http://{settings.host}:{settings.gateway_port}", _dev_token(settings), sample, out_dir=tmp_path
        )
        result = demo["result"]
        assert result["status"] == "preliminary"
        assert f'"{model}"' in json.dumps(result) and ("cxr-pneumonia" in json.dumps(result)) == (
            model == "cxr-pneumonia"
        )
        assert Path(demo["overlay_png"]).read_bytes().startswith(b"\x89PNG")


def test_sample_diagnosis_then_drift_report(running: tuple[Stack, StackState], tmp_path: Path) -> None:
    """What `make up` does after start-up, then what an SRE runs: the drift report of what was seen."""
    from sightline.cli import SAMPLES, _dev_token
    from sightline.demo import run_demo

    stack, _ = running
    settings = stack.settings
    demo = run_demo(
        f"http://{settings.host}:{settings.gateway_port}",
        _dev_token(settings),
        sorted(SAMPLES.glob("*.jpg"))[0],
        out_dir=tmp_path,
    )
    result = demo["result"]
    assert result["status"] == "preliminary" and 0.0 <= result["probability"] <= 1.0
    assert Path(demo["overlay_png"]).read_bytes().startswith(b"\x89PNG")
    observations = settings.data_dir / "drift-observations.jsonl"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sightline.cli",
            "drift",
            "report",
            "--observations",
            str(observations),
            "--out",
            str(tmp_path / "drift.png"),
            "--model-repository",
            str(REPO / "model_repository"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PSI" in out.stdout and (tmp_path / "drift.png").read_bytes().startswith(b"\x89PNG")


def test_ctrl_c_on_sightline_up_stops_everything(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path)
    ports = {k: v for k, v in settings.model_dump().items() if k.endswith("_port")}
    env = {**os.environ, **{f"SIGHTLINE_STACK_{k.upper()}": str(v) for k, v in ports.items()}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sightline.cli", "up", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: any("press Ctrl-C" in line for line in lines), 240)
        state = StackState.load(settings.state_file)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            Stack(settings).stop()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "stopped" in output
    assert tagged_processes(state.stack_id) == []
    assert shm_files(state.shm_prefix) == []
