"""The de-identification service over HTTP: TestClient, and one real uvicorn process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sightline_common.settings import TelemetrySettings
from sightline_deid.app import create_app
from sightline_deid.core.ocr import TesseractDetector
from sightline_deid.settings import DeidSettings

from tests.conftest import skip_or_fail_in_ci
from tests.unit.deid.deid_canary import canary_dataset, survivors, to_bytes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[3]
HEADERS = {"content-type": "application/dicom", "X-Sightline-Tenant": "hospital-a"}


@pytest.fixture(scope="module")
def client() -> TestClient:
    if not TesseractDetector.available():  # XC and US canaries are OCR'd
        skip_or_fail_in_ci("tesseract is not installed (make tools: scripts/get-tesseract.sh)")
    settings = DeidSettings(recipe="sightline-basic", environment="test", max_request_bytes=200_000,
                            telemetry=TelemetrySettings(exporter="none"))
    return TestClient(create_app(settings))


def test_deidentify_returns_dicom_and_a_summary(client: TestClient) -> None:
    data = to_bytes(canary_dataset("XC", 1))
    r = client.post("/v1/deidentify", content=data, headers=HEADERS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    assert survivors(r.content) == []
    summary = json.loads(r.headers["x-sightline-deid-summary"])
    assert summary["recipe"] == "sightline-basic" and summary["actions"]["X"] > 0
    assert "CNRY" not in r.headers["x-sightline-deid-summary"]
    assert pydicom.dcmread(BytesIO(r.content)).PatientIdentityRemoved == "YES"


def test_tenant_header_is_required(client: TestClient) -> None:
    r = client.post("/v1/deidentify", content=to_bytes(canary_dataset("CT", 1)),
                    headers={"content-type": "application/dicom"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "tenant"


def test_wrong_media_type(client: TestClient) -> None:
    r = client.post("/v1/deidentify", content=b"{}", headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == 415


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"not dicom at all", 400, "not-dicom"),
    (b"x" * 300_000, 413, "oversized"),
    (b"", 400, "not-dicom"),
])
def test_bad_bodies_are_problem_details(client: TestClient, body: bytes, status: int, reason: str) -> None:
    r = client.post("/v1/deidentify", content=body, headers=HEADERS)
    assert r.status_code == status and r.json()["reason"] == reason
    assert r.headers["content-type"] == "application/problem+json"


def test_deflated_beyond_the_inflated_limit_is_413_with_its_reason() -> None:
    settings = DeidSettings(recipe="sightline-basic", environment="test", max_inflated_bytes=64 * 1024,
                            telemetry=TelemetrySettings(exporter="none"))
    ds = canary_dataset("CT", 1)
    ds.Rows, ds.Columns, ds.PixelData = 512, 512, bytes(512 * 512)
    ds = pydicom.dcmread(BytesIO(to_bytes(ds)))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = TestClient(create_app(settings)).post("/v1/deidentify", content=buf.getvalue(), headers=HEADERS)
    assert r.status_code == 413 and r.json()["reason"] == "inflated-too-large"
    assert "CNRY" not in r.text


def test_burned_in_refusal_names_the_reason_not_values(client: TestClient) -> None:
    ds = canary_dataset("XC", 1)
    ds.BurnedInAnnotation = "YES"
    r = client.post("/v1/deidentify", content=to_bytes(ds), headers=HEADERS)
    assert r.status_code == 422 and r.json()["reason"] == "burned-in-annotation"
    assert "CNRY" not in r.text


def test_metrics_and_health(client: TestClient) -> None:
    client.post("/v1/deidentify", content=to_bytes(canary_dataset("CT", 3)), headers=HEADERS)
    metrics = client.get("/metrics").text
    assert 'sightline_deid_actions_total{action="X"}' in metrics
    assert 'sightline_stage_duration_seconds_count{service="deid",stage="deid"}' in metrics
    assert client.get("/health/ready").json()["checks"] == {"recipe": True, "ocr": True}
    assert client.get("/v1/recipe").json()["name"] == "sightline-basic"


def test_not_ready_without_the_ocr_engine(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sightline_deid.core.ocr.TESSERACT", "no-such-tesseract-binary")
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["checks"]["ocr"] is False
    r = client.post("/v1/deidentify", content=to_bytes(canary_dataset("XC", 1)), headers=HEADERS)
    assert r.status_code == 503 and r.json()["reason"] == "ocr-unavailable"


def test_more_frames_than_the_ocr_limit_is_413_with_a_reason() -> None:
    settings = DeidSettings(recipe="sightline-basic", environment="test", ocr_max_frames=1,
                            telemetry=TelemetrySettings(exporter="none"))
    ds = canary_dataset("XC", 1)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    r = TestClient(create_app(settings)).post("/v1/deidentify", content=to_bytes(ds), headers=HEADERS)
    assert r.status_code == 413 and r.json()["reason"] == "burned-in-frame-limit"
    assert "CNRY" not in r.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_DEID_")}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / "services" / n / "src") for n in ("common", "deid"))
    env.update(extra)
    return env


def test_module_refuses_to_start_without_a_recipe() -> None:
    proc = subprocess.run([sys.executable, "-m", "sightline_deid"], env=_env(
        SIGHTLINE_DEID_ENVIRONMENT="development", SIGHTLINE_DEID_PORT=str(_free_port())),
        capture_output=True, timeout=60)
    assert proc.returncode == 2


def test_real_uvicorn_process(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(SIGHTLINE_DEID_ENVIRONMENT="development", SIGHTLINE_DEID_PORT=str(port),
               SIGHTLINE_DEID_RECIPE="sightline-basic",
               SIGHTLINE_DEID_PSEUDONYM_KEY="integration-test-key-0123456789abcdef",
               SIGHTLINE_OTEL_TRACES_FILE=str(tmp_path / "traces.jsonl"))
    log = (tmp_path / "deid.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sightline_deid"], env=env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("service did not start")
        data = to_bytes(canary_dataset("CT", 4))
        r = httpx.post(f"{base}/v1/deidentify", content=data, headers=HEADERS, timeout=30)
        assert r.status_code == 200 and survivors(r.content) == []
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    logged = (tmp_path / "deid.log").read_bytes()
    assert b"CNRY" not in logged and b"7777" not in logged
