"""Issue 18 end to end, DIMSE both ways: DCMTK's ``storescu`` sends a study to the receiver's SCP, the
gateway de-identifies and runs it, and the SR and heatmap Segmentation arrive by C-STORE in the
hospital's PACS (Debian's Orthanc) under the study's ORIGINAL StudyInstanceUID, PatientID and
accession, while the gateway's database, object store and logs hold nothing identified."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sightline_gateway.settings import PacsDestination

from tests.integration.gateway.pacs import AE_TITLE, Orthanc, value
from tests.integration.receiver.conftest import serve_gateway
from tests.integration.receiver.test_receiver_dcmtk import RecordingIntake, dcmtk, run, write_study
from tests.unit.gateway.forwarding_fixtures import HeatmapExplain, key_file, stored_text
from tests.unit.gateway.gateway_fixtures import PHI
from tests.unit.gateway.gateway_fixtures import token as bearer
from tests.unit.receiver.receiver_fixtures import TENANT, receiver_settings, running_receiver

pytestmark = [pytest.mark.integration]

PATIENT_ID, ACCESSION, MODALITY = "00100020", "00080050", "00080060"
REFERENCED_SOP_INSTANCE = "00081155"


def _values(item: object, tag: str) -> list[str]:
    """Every value of ``tag`` at any depth of DICOM JSON."""
    found: list[str] = []
    if isinstance(item, list):
        for element in item:
            found += _values(element, tag)
    elif isinstance(item, dict):
        for key, attribute in item.items():
            if key == tag:
                found += [str(v) for v in attribute.get("Value", [])]
            elif isinstance(attribute, dict) and attribute.get("vr") == "SQ":
                found += _values(attribute.get("Value", []), tag)
    return found


def test_storescu_study_comes_back_to_the_pacs_under_its_own_identifiers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    orthanc = Orthanc(tmp_path / "orthanc")
    orthanc.start()
    files = write_study(tmp_path, 2)
    sent = [dcmread(f, stop_before_pixels=True) for f in files]
    study_uid = str(sent[0].StudyInstanceUID)
    pacs = PacsDestination(
        name="orthanc", host="127.0.0.1", port=orthanc.dicom_port, called_ae_title=AE_TITLE
    )
    try:
        with serve_gateway(
            tmp_path,
            HeatmapExplain,
            pacs_destinations={TENANT: pacs},
            reidentification_keys_file=key_file(tmp_path, TENANT),
        ) as gateway:
            token = bearer(TENANT, roles=("submitter",), subject="dicom-receiver")["Authorization"].split()[1]
            settings = receiver_settings(tmp_path, gateway.url, credential=token)
            intake = RecordingIntake(gateway.url, timeout_s=10, retry_budget_s=5)
            with running_receiver(settings, intake):
                out = run(dcmtk("storescu", settings, *files))
                assert out.returncode == 0, out.stdout + out.stderr
                deadline = time.monotonic() + 60
                while not intake.accepted:
                    assert time.monotonic() < deadline, "the receiver did not hand the study over"
                    time.sleep(0.1)
            (accepted,) = intake.accepted
            assert accepted.location
            delivery: dict[str, object] = {}
            while delivery.get("status") not in ("delivered", "failed"):
                assert time.monotonic() < deadline, f"no delivery: {delivery}"
                time.sleep(0.2)
                r = gateway.get(f"{accepted.location}/result")
                delivery = r.json().get("delivery", {}) if r.status_code == 200 else {}
            assert delivery["status"] == "delivered", delivery
            gateway_logs = caplog.text

        (study,) = orthanc.qido("studies", StudyInstanceUID=study_uid)
        assert value(study, PATIENT_ID) == sent[0].PatientID
        assert value(study, ACCESSION) == sent[0].AccessionNumber
        series = orthanc.qido(f"studies/{study_uid}/series")
        assert sorted(value(s, MODALITY) for s in series) == ["SEG", "SR"]
        # Every image the SR and the Segmentation reference is one the modality sent, by its own UID.
        referenced = set(_values(orthanc.qido(f"studies/{study_uid}/metadata"), REFERENCED_SOP_INSTANCE))
        assert referenced and referenced <= {str(ds.SOPInstanceUID) for ds in sent}

        planted = [PHI, study_uid, str(sent[0].SeriesInstanceUID), *(str(ds.SOPInstanceUID) for ds in sent)]
        stored = stored_text(tmp_path / "gateway")
        assert [v for v in planted if v.encode() in stored] == []
        assert [v for v in planted if v in gateway_logs] == []
    finally:
        orthanc.stop()
