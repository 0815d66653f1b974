"""The REST API through the real app with the real deid (in-process) and fake preprocess/explain."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pydicom
import pytest

from tests.unit.gateway.gateway_fixtures import PHI, harness, phi_dicom, png_bytes, token


@pytest.fixture
def h(tmp_path: Path):
    with harness(tmp_path) as h:
        yield h


def wait_done(h, study_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = h.client.get(f"/v1/studies/{study_id}", headers=token()).json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError("study did not finish")


def test_async_submit_returns_202_location_then_a_preliminary_result(h) -> None:
    r = h.submit()
    assert r.status_code == 202, r.text
    assert r.headers["Location"].startswith("/v1/studies/")
    assert len(r.headers["X-Trace-Id"]) == 32
    study = wait_done(h, r.json()["id"])
    assert study["status"] == "completed"
    assert {"deid_ms", "store_ms", "preprocess_ms", "explain_ms", "total_ms"} <= set(
        study["stage_timings_ms"]
    )
    result = h.client.get(f"/v1/studies/{study['id']}/result", headers=token()).json()
    assert result["status"] == "preliminary"
    assert result["model"]["name"] == "derm-cnn" and len(result["model"]["sha256"]) == 64
    assert result["decision"] == "refer for clinician review"  # logit 1.0 -> 0.73 >= 0.5
    assert "does not diagnose" in result["statement"]
    assert result["model"]["placeholder"] is True and "PLACEHOLDER" in result["warning"]
    assert result["trace_id"]
    overlay = result["explanation"]["links"]["overlay_png"]
    png = h.client.get(overlay.replace("http://testserver", ""))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


def test_sync_mode_returns_the_result_directly(h) -> None:
    r = h.submit(mode="sync")
    assert r.status_code == 200, r.text
    assert r.json()["probability"] == pytest.approx(0.731059, abs=1e-5)
    assert r.headers["Location"].startswith("/v1/studies/")


def test_stored_image_is_deidentified_and_no_response_carries_phi(h) -> None:
    r = h.submit(mode="sync")
    study_id = r.headers["Location"].rsplit("/", 1)[1]
    stored = list((h.store.root / "studies" / study_id / "instances").glob("*.dcm"))
    assert stored and all(PHI.encode() not in p.read_bytes() for p in stored)
    assert all(PHI.encode() not in d for d in h.preprocess.seen)
    for path in ("", "/result", "/result.fhir", "/result.dcm"):
        body = h.client.get(f"/v1/studies/{study_id}{path}", headers=token()).content
        assert PHI.encode() not in body


def test_idempotency_key_returns_the_same_study(h) -> None:
    data = phi_dicom()  # the same request (a new phi_dicom() has new UIDs: another request)
    a = h.submit(data, headers={"Idempotency-Key": "abc-1"})
    b = h.submit(data, headers={"Idempotency-Key": "abc-1"})
    c = h.submit(data, headers={"Idempotency-Key": "abc-2"})
    assert a.json()["id"] == b.json()["id"] != c.json()["id"]


def test_photo_with_sidecar_becomes_a_vl_photographic_image(h) -> None:
    files = {
        "image": ("lesion.png", png_bytes(), "image/png"),
        "metadata": (None, json.dumps({"sex": "F", "age": 45, "body_site": "back", "device": "dermoscope"})),
    }
    r = h.client.post("/v1/studies", files=files, params={"mode": "sync"}, headers=token())
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(h.preprocess.seen[-1]))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4" and ds.Modality == "XC"
    assert ds.PhotometricInterpretation == "RGB" and ds.BurnedInAnnotation == "NO"


def test_multipart_related_carries_several_instances(h) -> None:
    boundary = "sightline-test-boundary"
    parts = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + phi_dicom(seed=i) + b"\r\n"
            for i in range(3)
        )
        + f"--{boundary}--\r\n".encode()
    )
    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    r = h.client.post(
        "/v1/studies", content=parts, params={"mode": "sync"}, headers={"Content-Type": ct, **token()}
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["instances"]) == 3


def test_review_makes_the_result_final_and_is_audited(h) -> None:
    study_id = h.submit(mode="sync").headers["Location"].rsplit("/", 1)[1]
    r = h.client.post(
        f"/v1/studies/{study_id}/reviews",
        json={"verdict": "agree", "comment": "looks right"},
        headers=token(roles=("clinician",)),
    )
    assert r.status_code == 201, r.text
    result = h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()
    assert result["status"] == "final" and result["reviews"][0]["verdict"] == "agree"
    assert (
        h.client.post(
            f"/v1/studies/{study_id}/reviews", json={"verdict": "agree"}, headers=token(roles=("submitter",))
        ).status_code
        == 403
    )
    audit = h.client.get(
        "/v1/audit", params={"action": "review.create"}, headers=token(roles=("auditor",))
    ).json()
    assert [e["resource_type"] for e in audit["events"]] == ["review"]
    assert "looks right" not in json.dumps(audit)


def test_another_tenant_gets_404_for_every_study_route(h) -> None:
    study_id = h.submit(mode="sync").headers["Location"].rsplit("/", 1)[1]
    other = token(tenant="hospital-b", roles=("submitter", "clinician"))
    for path in ("", "/result", "/result.fhir", "/result.dcm"):
        r = h.client.get(f"/v1/studies/{study_id}{path}", headers=other)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = h.client.post(f"/v1/studies/{study_id}/reviews", json={"verdict": "agree"}, headers=other)
    assert r.status_code == 404


def test_fhir_bundle_and_sr(h) -> None:
    study_id = h.submit(mode="sync").headers["Location"].rsplit("/", 1)[1]
    fhir = h.client.get(f"/v1/studies/{study_id}/result.fhir", headers=token())
    assert fhir.headers["content-type"] == "application/fhir+json"
    kinds = [e["resource"]["resourceType"] for e in fhir.json()["entry"]]
    assert kinds == ["DiagnosticReport", "Observation", "Device", "ImagingStudy"]
    assert fhir.json()["entry"][0]["resource"]["status"] == "preliminary"
    sr = pydicom.dcmread(
        io.BytesIO(h.client.get(f"/v1/studies/{study_id}/result.dcm", headers=token()).content)
    )
    stored = pydicom.dcmread(io.BytesIO(h.store.get(f"studies/{study_id}/instances/0.dcm")))
    assert sr.Modality == "SR" and sr.StudyInstanceUID == stored.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == stored.SOPInstanceUID


def test_models_and_model_card(h) -> None:
    models = {m["name"]: m for m in h.client.get("/v1/models", headers=token()).json()}
    assert models["derm-cnn"]["served"] and models["derm-cnn"]["enabled"]  # served by default
    detail = h.client.get("/v1/models/derm-cnn", headers=token()).json()
    assert detail["manifest"]["name"] == "derm-cnn"
    assert h.client.get("/v1/models/nope", headers=token()).status_code == 404


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({"Content-Type": "application/dicom"}, b"", 400),
        ({"Content-Type": "application/dicom"}, b"not dicom at all" * 20, 400),
        ({"Content-Type": "multipart/related; boundary=x"}, b"garbage", 400),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"garbage", 400),
    ],
)
def test_malformed_uploads_get_problem_details(h, headers, body, status) -> None:
    r = h.client.post("/v1/studies", content=body, headers={**headers, **token()})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status


def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    with harness(tmp_path, max_upload_bytes=1000) as h:
        r = h.submit()
        assert r.status_code == 413 and r.json()["code"] == "payload-too-large"


def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    with harness(tmp_path, rate_limit_per_minute=1, rate_limit_burst=2) as h:
        codes = [h.client.get("/v1/models", headers=token()).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = h.client.get("/v1/models", headers=token())
        assert int(r.headers["Retry-After"]) >= 1


def test_unprocessable_study_fails_with_its_reason_and_sync_gets_422(h) -> None:
    h.preprocess.refuse = True
    r = h.submit(mode="sync")
    assert r.status_code == 422 and r.json()["code"] == "unprocessable"
    study = h.client.get(f"/v1/studies/{r.json()['study_id']}", headers=token()).json()
    assert study["status"] == "failed" and study["error"]["code"] == "unprocessable"
    assert h.preprocess.calls == 1  # not retried


def test_transient_failures_are_retried_with_backoff(h) -> None:
    h.preprocess.fail_times = 2
    r = h.submit(mode="sync")
    assert r.status_code == 200, r.text
    assert h.preprocess.calls == 3


def test_a_job_that_keeps_failing_ends_with_its_reason(tmp_path: Path) -> None:
    with harness(tmp_path, job_retry_budget_s=0.5, job_backoff_max_s=0.05) as h:
        h.preprocess.fail_times = 10_000
        r = h.submit()
        study = wait_done(h, r.json()["id"])
        assert study["status"] == "failed"
        assert study["error"]["code"] == "dependency-unavailable"
        assert "retry budget of 0.5s exhausted" in study["error"]["detail"]
        assert "preprocess unavailable" in study["error"]["detail"]


def test_explanation_unavailable_still_gives_a_result_that_says_so(tmp_path: Path) -> None:
    with harness(tmp_path, job_retry_budget_s=0.2, job_backoff_max_s=0.05) as h:
        h.explain.unavailable = True
        r = h.submit(mode="sync")
        assert r.status_code == 200, r.text
        assert r.json()["explanation"]["status"] == "pending"  # filled in later (backfill)


def test_explain_false_skips_explanation(h) -> None:
    r = h.submit(mode="sync", explain="false")
    assert r.status_code == 200 and r.json()["explanation"] is None and h.explain.calls == 0


def test_signed_links_refuse_tampering(h) -> None:
    r = h.submit(mode="sync")
    link = r.json()["explanation"]["links"]["overlay_png"].replace("http://testserver", "")
    assert h.client.get(link.replace("signature=", "signature=0")).status_code in (403, 422)
    assert h.client.get(link.replace("overlay.png", "heatmap.npy")).status_code == 403


def _sample_value(metrics: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not exported")


def test_each_result_feeds_score_decision_and_backlog_metrics(h) -> None:
    before = h.client.get("/metrics").text
    try:
        positives = _sample_value(
            before, "sightline_model_decisions_total", model="derm-cnn", decision="positive"
        )
    except AssertionError:
        positives = 0.0
    assert h.submit(mode="sync").status_code == 200
    metrics = h.client.get("/metrics").text
    after = _sample_value(metrics, "sightline_model_decisions_total", model="derm-cnn", decision="positive")
    assert after == positives + 1
    assert _sample_value(metrics, "sightline_model_score_count", model="derm-cnn") >= 1
    assert "sightline_jobs_pending{" in metrics and "sightline_jobs_oldest_pending_age_seconds{" in metrics


def test_stow_rs_stores_through_deid_and_names_the_study(h) -> None:
    boundary = "stow-boundary"
    parts = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + phi_dicom(seed=i) + b"\r\n"
            for i in range(2)
        )
        + f"--{boundary}--\r\n".encode()
    )
    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    r = h.client.post("/dicomweb/studies", content=parts, headers={"Content-Type": ct, **token()})
    assert r.status_code == 200, r.text  # PS3.18 10.5.3: every instance stored
    assert r.headers["content-type"].startswith("application/dicom+json")
    url = r.json()["00081190"]["Value"][0]
    assert url.endswith(r.headers["Location"])
    study = wait_done(h, r.headers["Location"].rsplit("/", 1)[1])
    assert study["status"] == "completed"
    assert PHI.encode() not in r.content
    audit = h.client.get(
        "/v1/audit",
        params={"action": "study.create", "resource_id": study["id"]},
        headers=token(roles=("auditor",)),
    ).json()
    # Audited once, in the transaction that stores the study, with the caller's roles.
    assert [e["roles"] for e in audit["events"]] == [["clinician", "submitter"]]


def test_stow_rs_refuses_a_plain_dicom_body(h) -> None:
    r = h.client.post(
        "/dicomweb/studies", content=phi_dicom(), headers={"Content-Type": "application/dicom", **token()}
    )
    assert r.status_code == 415
    assert r.headers["content-type"].startswith("application/problem+json")
