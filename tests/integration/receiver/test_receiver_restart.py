"""No acknowledged study is lost: DCMTK's storescu sends a study while the gateway is down, the
receiver process is killed (SIGKILL) once the C-STORE succeeded, and started again with the gateway
up it delivers the study from its spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sightline_receiver.settings import ReceiverSettings

from sightline.stack.env import settings_env
from tests.conftest import free_ports
from tests.integration.receiver.conftest import LiveGateway, dicom_tool
from tests.integration.receiver.test_receiver_dcmtk import write_study
from tests.unit.gateway.gateway_fixtures import PHI
from tests.unit.gateway.gateway_fixtures import token as bearer
from tests.unit.receiver.receiver_fixtures import MODALITY_AE, TENANT, receiver_settings

pytestmark = [pytest.mark.integration]


def start_receiver(settings: ReceiverSettings, log: Path) -> subprocess.Popen[bytes]:
    """``python -m sightline_receiver`` configured by ``settings``, once it answers ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env.update(settings_env(settings), PYTHONUNBUFFERED="1", SIGHTLINE_OTEL_EXPORTER="none")
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sightline_receiver"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{settings.port}/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"receiver not ready in 60 s:\n{log.read_text()}")


def spooled(settings: ReceiverSettings) -> list[Path]:
    return [p for p in (settings.spool_dir / "studies").rglob("*") if p.is_file()]


def test_a_study_acknowledged_before_a_sigkill_reaches_the_gateway_after_the_restart(
    tmp_path: Path, live_gateway: LiveGateway
) -> None:
    storescu = dicom_tool("storescu")
    credential = bearer(TENANT, roles=("submitter",), subject="dicom-receiver")["Authorization"].split()[1]
    (nothing_there,) = free_ports(1)
    log = tmp_path / "receiver.log"
    down = receiver_settings(
        tmp_path, f"http://127.0.0.1:{nothing_there}", credential=credential, log_json=False
    )
    files = write_study(tmp_path, 2)

    receiver = start_receiver(down, log)
    try:
        target = ["-aet", MODALITY_AE, "-aec", down.ae_title, "127.0.0.1", str(down.dicom_port)]
        sent = subprocess.run(
            [storescu, *target, *map(str, files)], capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr  # both C-STOREs answered success
    finally:
        receiver.send_signal(signal.SIGKILL)  # no shutdown, no drain: only the spool remains
        receiver.wait(timeout=10)
    assert len(spooled(down)) == 2

    up = receiver_settings(tmp_path, live_gateway.url, credential=credential, log_json=False)
    assert (up.spool_dir, up.spool_key_file) == (down.spool_dir, down.spool_key_file)
    receiver = start_receiver(up, log)
    try:
        auditor = bearer(TENANT, roles=("auditor", "clinician"))
        deadline, events = time.monotonic() + 30, []
        while not events and time.monotonic() < deadline:
            time.sleep(0.2)
            page = httpx.get(
                f"{live_gateway.url}/v1/audit",
                params={"action": "study.create", "actor": "dicom-receiver"},
                headers=auditor,
                timeout=10,
            )
            events = page.json()["events"]
        (event,) = events
        study = httpx.get(
            f"{live_gateway.url}/v1/studies/{event['resource_id']}", headers=auditor, timeout=10
        )
        assert study.json()["instances"] == 2
        deadline = time.monotonic() + 10
        while spooled(up) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spooled(up) == []  # removed once the gateway took it
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.wait(timeout=30)
    logged = log.read_text()
    assert "1 studies recovered" in logged and "handed over" in logged
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    assert PHI not in logged and uid not in logged
