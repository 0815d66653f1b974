"""The way back: a study's result re-identified and filed in its tenant's PACS (a recording fake here;
Orthanc in tests/integration/gateway/test_pacs_forwarding.py).

The SR and the heatmap Segmentation arrive under the original StudyInstanceUID, PatientID and
accession, with their own new series and instance UIDs and references to the original images;
the gateway keeps only the sealed record; delivery is retried, failed and audited; retention
purges the record.
"""

from __future__ import annotations

import io
import logging
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydicom import Dataset, dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from sightline_gateway.app import create_app
from sightline_gateway.core import dicomweb
from sightline_gateway.settings import PacsDestination

from tests.conftest import skip_or_fail_in_ci
from tests.unit.gateway.forwarding_fixtures import (
    TENANT,
    RecordingSender,
    forwarding_harness,
    key_file,
    stored_text,
    wait_delivery,
)
from tests.unit.gateway.gateway_fixtures import PHI, Harness, phi_dicom, settings, token


def original(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data), stop_before_pixels=True)


def referenced_sop_uids(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID at any depth."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.keyword == "ReferencedSOPInstanceUID":
            found.add(str(element.value))
    return found


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def h(tmp_path: Path, sender: RecordingSender) -> Iterator[Harness]:
    with forwarding_harness(tmp_path, {"stow-rs": sender}) as h:
        yield h


def submit(h: Harness, data: bytes) -> str:
    r = h.submit(data, mode="sync")
    assert r.status_code in (200, 201), r.text
    return str(r.headers["Location"]).rsplit("/", 1)[1]


def test_the_sr_and_heatmap_are_filed_under_the_original_study(
    h: Harness, sender: RecordingSender, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = phi_dicom(seed=3)
    sent = original(data)
    study_id = submit(h, data)
    body = wait_delivery(h, study_id)
    assert body["delivery"] == {
        "status": "delivered",
        "attempts": 1,
        "destination": "pacs-a",
        "delivered_at": body["delivery"]["delivered_at"],
        "last_error": None,
    }
    (objects,) = sender.sent
    sr, seg = (dcmread(io.BytesIO(o)) for o in objects)
    assert (sr.SOPClassUID, seg.SOPClassUID) == (Comprehensive3DSRStorage, SegmentationStorage)
    for ds in (sr, seg):
        assert ds.StudyInstanceUID == sent.StudyInstanceUID
        assert ds.PatientID == sent.PatientID and ds.AccessionNumber == sent.AccessionNumber
        assert "PatientIdentityRemoved" not in ds and "DeidentificationMethod" not in ds
        # New objects of Sightline's own: never the original series or instance.
        assert ds.SeriesInstanceUID != sent.SeriesInstanceUID and ds.SOPInstanceUID != sent.SOPInstanceUID
    # The SR's and the Segmentation's evidence is the image the hospital sent, by its own UIDs.
    assert referenced_sop_uids(sr) == {sent.SOPInstanceUID}
    assert referenced_sop_uids(seg) == {sent.SOPInstanceUID}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sent.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == sent.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sent.SeriesInstanceUID
    # The same objects as the de-identified DICOMweb names (stable series and instance UIDs).
    assert sr.SOPInstanceUID == dicomweb.result_object(study_id, "x").sop_instance_uid
    assert seg.SOPInstanceUID == dicomweb.heatmap_uids(study_id)[1]

    # Nothing identified is kept: not the planted PHI, not the original UIDs (only the sealed record).
    stored = stored_text(tmp_path)
    for value in (PHI, str(sent.StudyInstanceUID), str(sent.SOPInstanceUID), str(sent.SeriesInstanceUID)):
        assert value.encode() not in stored
        assert value not in caplog.text
    events = h.client.get("/v1/audit", params={"action": "result.deliver"}, headers=token(roles=("auditor",)))
    (event,) = events.json()["events"]
    assert (event["resource_id"], event["outcome"]) == (study_id, "success")

    # Still valid IODs once re-identified (dicom3tools).
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        skip_or_fail_in_ci("dciodvfy not installed (make tools: scripts/get-dicom3tools.sh)")
    for name, data in zip(("sr", "seg"), objects, strict=True):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(data)
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], (name, errors)


def test_a_pacs_that_stays_down_is_retried_then_reported_failed_and_nothing_is_lost(
    tmp_path: Path, sender: RecordingSender
) -> None:
    sender.fail = True
    with forwarding_harness(tmp_path, {"stow-rs": sender}, delivery_retry_budget_s=3.0) as h:
        study_id = submit(h, phi_dicom())
        body = wait_delivery(h, study_id)
        delivery = body["delivery"]
        assert delivery["status"] == "failed" and delivery["attempts"] == sender.attempts >= 3
        assert "retry budget exhausted" in delivery["last_error"] and PHI not in delivery["last_error"]
        # The result stands, and the record is kept until retention: nothing is lost.
        assert body["probability"] > 0
        con = sqlite3.connect(tmp_path / "gw.db")
        assert con.execute("SELECT count(*) FROM reidentification_records").fetchone() == (1,)
        events = h.client.get(
            "/v1/audit", params={"action": "result.deliver"}, headers=token(roles=("auditor",))
        )
        assert [e["outcome"] for e in events.json()["events"]] == ["failure"]


def test_an_admin_sends_a_failed_delivery_again_once_the_pacs_is_back(
    tmp_path: Path, sender: RecordingSender
) -> None:
    sender.fail = True
    admin = token(roles=("admin",))
    with forwarding_harness(tmp_path, {"stow-rs": sender}, delivery_retry_budget_s=0.5) as h:
        study_id = submit(h, phi_dicom())
        assert wait_delivery(h, study_id)["delivery"]["status"] == "failed"
        assert h.client.post(f"/v1/studies/{study_id}/delivery", headers=token()).status_code == 403
        sender.fail = False
        r = h.client.post(f"/v1/studies/{study_id}/delivery", headers=admin)
        assert r.status_code == 202, r.text
        assert r.json()["delivery"]["status"] == "pending"
        delivery = wait_delivery(h, study_id)["delivery"]
        assert delivery["status"] == "delivered" and len(sender.sent) == 1
        again = h.client.post(f"/v1/studies/{study_id}/delivery", headers=admin)
        assert again.status_code == 409  # only a failed delivery is sent again
        events = h.client.get("/v1/audit", headers=token(roles=("auditor",))).json()["events"]
        trail = [(e["action"], e["outcome"]) for e in events if e["action"].startswith("result.")]
        assert ("result.redeliver", "success") in trail
        assert [o for a, o in trail if a == "result.deliver"] == ["failure", "success"]
        other = h.submit(phi_dicom(seed=9), headers=token(tenant="hospital-b"), mode="sync")
        other_id = other.headers["Location"].rsplit("/", 1)[1]
        r = h.client.post(
            f"/v1/studies/{other_id}/delivery", headers=token(tenant="hospital-b", roles=("admin",))
        )
        assert r.status_code == 404  # a tenant without a PACS has no delivery


def test_a_final_refusal_is_not_retried(tmp_path: Path, sender: RecordingSender) -> None:
    sender.refuse = True
    with forwarding_harness(tmp_path, {"stow-rs": sender}) as h:
        delivery = wait_delivery(h, submit(h, phi_dicom()))["delivery"]
    assert (delivery["status"], delivery["attempts"], sender.attempts) == ("failed", 1, 1)
    assert delivery["last_error"] == "STOW-RS answered 409"


def test_retention_purges_the_record(h: Harness, tmp_path: Path) -> None:
    study_id = submit(h, phi_dicom())
    wait_delivery(h, study_id)
    con = sqlite3.connect(tmp_path / "gw.db")
    assert con.execute("SELECT count(*) FROM reidentification_records").fetchone() == (1,)
    portal, pipeline = h.client.portal, h.client.app.state.gateway.pipeline  # type: ignore[attr-defined]
    assert portal is not None and portal.call(pipeline.purge_expired, timedelta(0)) == 1
    assert con.execute("SELECT count(*) FROM reidentification_records").fetchone() == (0,)
    # The delivery's status stays with the result.
    assert (
        h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()["delivery"]["status"]
        == "delivered"
    )


def test_the_tenants_own_system_finds_its_accession_in_the_fhir_report(h: Harness) -> None:
    """The hospital's system files the FHIR report by its order; a clinician's read never shows it."""
    data = phi_dicom(seed=5)
    accession = str(original(data).AccessionNumber)
    study_id = submit(h, data)
    url = f"/v1/studies/{study_id}/result.fhir"

    own = h.client.get(url, headers=token(roles=("submitter",)))
    assert own.status_code == 200, own.text
    report = own.json()["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport"
    (order,) = report["basedOn"]
    assert order["type"] == "ServiceRequest" and order["identifier"]["value"] == accession
    assert order["identifier"]["type"]["coding"][0]["code"] == "ACSN"

    clinician = h.client.get(url, headers=token(roles=("clinician",)))
    assert clinician.status_code == 200 and accession not in clinician.text
    assert "basedOn" not in clinician.json()["entry"][0]["resource"]


def test_a_tenant_without_a_pacs_keeps_no_record(h: Harness, tmp_path: Path) -> None:
    other = {"Authorization": token(tenant="hospital-b")["Authorization"]}
    r = h.submit(phi_dicom(), headers=other, mode="sync")
    study_id = r.headers["Location"].rsplit("/", 1)[1]
    body = h.client.get(f"/v1/studies/{study_id}/result", headers=token(tenant="hospital-b")).json()
    assert "delivery" not in body
    fhir = h.client.get(f"/v1/studies/{study_id}/result.fhir", headers=token(tenant="hospital-b"))
    assert fhir.status_code == 200 and "basedOn" not in fhir.json()["entry"][0]["resource"]
    con = sqlite3.connect(tmp_path / "gw.db")
    assert con.execute("SELECT count(*) FROM reidentification_records").fetchone() == (0,)


def test_stow_rs_intake_keeps_the_record_from_the_headers_it_read(
    h: Harness, sender: RecordingSender
) -> None:
    data = phi_dicom(seed=5)
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    r = h.client.post(
        "/dicomweb/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            **token(),
        },
    )
    assert r.status_code == 200, r.text
    study_id = r.headers["Location"].rsplit("/", 1)[1]
    wait_delivery(h, study_id)
    (objects,) = sender.sent
    assert dcmread(io.BytesIO(objects[0])).StudyInstanceUID == original(data).StudyInstanceUID


def test_a_destination_is_one_kind_and_needs_the_tenant_keys(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"STOW-RS .* or C-STORE"):
        PacsDestination(name="p", stow_url="http://pacs/dicom-web/studies", host="pacs", port=104)
    with pytest.raises(ValidationError, match="needs host, port and called_ae_title"):
        PacsDestination(name="p", host="pacs", port=104)
    dest = {TENANT: PacsDestination(name="p", stow_url="http://pacs/dicom-web/studies")}
    with pytest.raises(ValidationError, match="reidentification_keys_file"):
        settings(tmp_path, pacs_destinations=dest)


def test_the_gateway_refuses_to_start_without_a_key_for_a_tenant_with_a_pacs(tmp_path: Path) -> None:
    dest = {"hospital-z": PacsDestination(name="p", stow_url="http://pacs/dicom-web/studies")}
    s = settings(tmp_path, pacs_destinations=dest, reidentification_keys_file=key_file(tmp_path, TENANT))
    with pytest.raises(ValueError, match=r"no key for tenants with a PACS: \['hospital-z'\]"):
        create_app(s)


def test_a_pending_delivery_to_a_destination_no_longer_configured_fails_saying_so(
    tmp_path: Path, sender: RecordingSender
) -> None:
    sender.fail = True
    study_id = _submitted_and_sent_once(tmp_path, sender)
    renamed = PacsDestination(name="pacs-b", stow_url="http://pacs-b.invalid/dicom-web/studies")
    with forwarding_harness(tmp_path, {"stow-rs": sender}, renamed) as h:
        delivery = wait_delivery(h, study_id)["delivery"]
    assert (delivery["status"], delivery["destination"]) == ("failed", "pacs-a")
    assert delivery["last_error"] == "destination no longer configured"


def test_shutdown_during_a_send_hands_the_delivery_back_for_the_next_process(
    tmp_path: Path, sender: RecordingSender
) -> None:
    """Before: the delivery stayed leased to the stopped process for delivery_lease_s (120 s)."""
    sender.delay_s = 60  # the PACS has not answered when the gateway stops
    study_id = _submitted_and_sent_once(tmp_path, sender)
    sender.delay_s = 0.0
    started = time.monotonic()
    with forwarding_harness(tmp_path, {"stow-rs": sender}) as h:
        delivery = wait_delivery(h, study_id, timeout_s=10)["delivery"]
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)
    assert time.monotonic() - started < 10
    assert len(sender.sent) == 1


def _submitted_and_sent_once(tmp_path: Path, sender: RecordingSender) -> str:
    """A study submitted to a gateway that is stopped once its delivery was tried (or is being tried)."""
    with forwarding_harness(tmp_path, {"stow-rs": sender}) as h:
        study_id = submit(h, phi_dicom())
        deadline = time.monotonic() + 10
        while sender.attempts < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return study_id
