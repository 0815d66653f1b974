"""The whole stack through the gateway: a DICOM with planted fake PHI goes in; result with its
Grad-CAM explanation, FHIR and SR come out; the planted strings appear in no response, database,
object, log or trace."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from tests.unit.gateway.gateway_fixtures import PHI, PLANTED, phi_dicom

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    from sightline_gateway.core.auth import mint_dev_token

    from sightline.stack import Stack, settings_on_free_ports

    data = tmp_path_factory.mktemp("stack")
    settings = settings_on_free_ports(data, model_repository=REPO / "model_repository")
    ports = {"gateway_port": settings.gateway_port}
    stack = Stack(settings)
    stack.start()
    try:
        secret = json.loads((data / "secrets.json").read_text())["jwt_secret"]
        token = mint_dev_token(
            secret, "sightline-dev", "sightline", "e2e-hospital", ["submitter", "clinician", "auditor"], 3600
        )
        yield f"http://127.0.0.1:{ports['gateway_port']}", token, data
    finally:
        stack.stop()


def test_phi_goes_in_and_comes_out_nowhere(stack: tuple[str, str, Path]) -> None:
    url, token, data = stack
    auth = {"Authorization": f"Bearer {token}"}
    responses: list[bytes] = []
    with httpx.Client(base_url=url, headers=auth, timeout=180) as client:
        r = client.post(
            "/v1/studies",
            params={"mode": "sync"},
            content=phi_dicom(rows=160, cols=200),
            headers={"Content-Type": "application/dicom", "Idempotency-Key": "e2e-1"},
        )
        responses.append(r.content)
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Trace-Id")
        result = r.json()
        study_id = result["study_id"]
        assert result["model"]["name"] == "derm-cnn" and len(result["model"]["sha256"]) == 64
        assert 0.0 <= result["probability"] <= 1.0 and result["status"] == "preliminary"
        assert result["trace_id"] and "does not diagnose" in result["statement"]
        # The planted image is random noise, not dermoscopy: the served graph's score flags it.
        assert result["instances"][0]["out_of_scope"]["flagged"] is True, result["instances"]
        assert result["out_of_scope"]["flagged"] and result["out_of_scope_warning"].startswith("OUT OF SCOPE")
        explanation = result.get("explanation") or {}
        assert explanation.get("status") == "available", explanation
        links = explanation.get("links") or {}
        assert {"heatmap_npy", "overlay_png"} <= links.keys(), explanation

        study = client.get(f"/v1/studies/{study_id}")
        responses.append(study.content)
        assert {"deid_ms", "preprocess_ms", "total_ms"} <= set(study.json()["stage_timings_ms"])

        fhir = client.get(f"/v1/studies/{study_id}/result.fhir")
        responses.append(fhir.content)
        assert [e["resource"]["resourceType"] for e in fhir.json()["entry"]] == [
            "DiagnosticReport",
            "Observation",
            "Device",
            "ImagingStudy",
        ]

        sr = client.get(f"/v1/studies/{study_id}/result.dcm")
        responses.append(sr.content)
        assert sr.status_code == 200
        assert pydicom.dcmread(io.BytesIO(sr.content)).Modality == "SR"

        review = client.post(f"/v1/studies/{study_id}/reviews", json={"verdict": "agree", "comment": "e2e"})
        responses.append(review.content)
        assert review.status_code == 201
        verify = client.get("/v1/audit/verify").json()
        assert verify["ok"], verify
    # The signed links work on their own, without the bearer token.
    heatmap = httpx.get(links["heatmap_npy"], timeout=60)
    overlay = httpx.get(links["overlay_png"], timeout=60)
    responses += [heatmap.content, overlay.content]
    assert heatmap.status_code == 200 and overlay.status_code == 200
    heat = np.load(io.BytesIO(heatmap.content))
    assert heat.ndim == 2 and heat.dtype == np.float16 and 0.0 <= heat.min() <= heat.max() <= 1.0
    assert heat.max() > 0.0, "an all-zero heatmap explains nothing"
    assert overlay.content.startswith(b"\x89PNG")

    time.sleep(1.5)  # let the batch span processors flush
    planted = [p.encode() for p in PLANTED] + [PHI.encode()]
    places: dict[str, bytes] = {f"response {i}": body for i, body in enumerate(responses)}
    for path in [
        *data.glob("sightline.db*"),
        *(data / "objects").rglob("*"),
        *(data / "logs").glob("*.log"),
        data / "traces.jsonl",
    ]:
        if path.is_file():
            places[str(path.relative_to(data))] = path.read_bytes()
    assert any(k.startswith("objects/") for k in places), "no de-identified object stored"
    assert (data / "traces.jsonl").exists()
    leaks = [(where, p.decode()) for where, body in places.items() for p in planted if p in body]
    assert not leaks, leaks
