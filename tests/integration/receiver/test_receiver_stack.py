"""The receiver as ``sightline up`` runs it: its own process, configured by the stack's plan, feeding
the stack's gateway with the development tenant's credential (preprocess, explain and Triton are
not needed to take a study in, so they are not started)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from sightline.stack import Stack, settings_on_free_ports
from tests.conftest import REPO
from tests.integration.receiver.conftest import dicom_tool
from tests.integration.receiver.test_receiver_dcmtk import write_study

pytestmark = [pytest.mark.integration]


def test_storescu_to_the_stacks_receiver_creates_a_study_in_the_gateway(tmp_path: Path) -> None:
    from sightline.cli import _dev_token

    storescu, echoscu = dicom_tool("storescu"), dicom_tool("echoscu")
    settings = settings_on_free_ports(
        tmp_path / "stack", model_repository=REPO / "model_repository", ready_timeout_s=120
    )
    stack = Stack(settings)
    state = stack.start(only=["deid", "gateway", "receiver"])
    try:
        target = ["-aec", "SIGHTLINE", settings.host, str(settings.receiver_dicom_port)]
        echo = subprocess.run(
            [echoscu, "-aet", "ECHOSCU", *target], capture_output=True, text=True, timeout=60
        )
        assert echo.returncode == 0, echo.stdout + echo.stderr
        files = [str(p) for p in write_study(tmp_path, 2)]
        sent = subprocess.run(
            [storescu, "-aet", "STORESCU", *target, *files], capture_output=True, text=True, timeout=60
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        gateway = f"http://{settings.host}:{settings.gateway_port}"
        headers = {"Authorization": f"Bearer {_dev_token(settings)}"}
        deadline = time.monotonic() + 30
        events: list[dict[str, object]] = []
        while not events and time.monotonic() < deadline:
            time.sleep(0.5)
            page = httpx.get(
                f"{gateway}/v1/audit", params={"action": "study.create"}, headers=headers, timeout=10
            )
            events = [e for e in page.json()["events"] if e["actor"] == "dicom-receiver"]
        (event,) = events
        study = httpx.get(f"{gateway}/v1/studies/{event['resource_id']}", headers=headers, timeout=10).json()
        assert study["instances"] == 2
        assert "handed over" in (settings.data_dir / "logs" / "receiver.log").read_text()
        logs = "".join(p.read_text(errors="replace") for p in (settings.data_dir / "logs").glob("*.log"))
        original_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        assert "ZQXPHI" not in logs and original_uid not in logs
    finally:
        stack.stop(state)
