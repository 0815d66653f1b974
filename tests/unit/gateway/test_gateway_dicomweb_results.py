"""QIDO-RS and WADO-RS of Sightline's own results: per tenant, stable UIDs, nothing identified."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.unit.gateway.gateway_fixtures import PHI, Harness, harness, phi_dicom, token
from tests.unit.gateway.test_gateway_stow import stow

STUDY, SERIES, INSTANCE, RETRIEVE_URL = "0020000D", "0020000E", "00080018", "00081190"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as h:
        yield h


def completed(h: Harness, location: str) -> None:
    deadline = time.monotonic() + 10
    while h.client.get(location, headers=token()).json()["status"] != "completed":
        assert time.monotonic() < deadline, "study did not complete"
        time.sleep(0.05)


def parts(body: bytes, content_type: str) -> list[bytes]:
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return [p.get_payload(decode=True) for p in message.iter_parts()]  # type: ignore[misc]


def test_a_tenant_finds_and_retrieves_its_result_sr_under_the_deidentified_study(h: Harness) -> None:
    original = phi_dicom(seed=7)
    r = stow(h, original)
    completed(h, r.headers["Location"])
    stow(h, phi_dicom(seed=8))  # a second study of the same tenant, maybe not complete yet
    (match, *_) = h.client.get("/dicomweb/studies", headers=token()).json()
    study_uid = match[STUDY]["Value"][0]
    assert study_uid != str(dcmread(io.BytesIO(original)).StudyInstanceUID)
    (series,) = h.client.get(f"/dicomweb/studies/{study_uid}/series", headers=token()).json()
    series_uid = series[SERIES]["Value"][0]
    (instance,) = h.client.get(
        f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances", headers=token()
    ).json()
    url = instance[RETRIEVE_URL]["Value"][0]
    wado = h.client.get(url, headers=token())
    assert wado.status_code == 200 and wado.headers["content-type"].startswith("multipart/related")
    (sr_bytes,) = parts(wado.content, wado.headers["content-type"])
    sr = dcmread(io.BytesIO(sr_bytes))
    assert sr.Modality == "SR" and sr.StudyInstanceUID == study_uid
    assert (sr.SeriesInstanceUID, sr.SOPInstanceUID) == (series_uid, instance[INSTANCE]["Value"][0])
    metadata = h.client.get(f"/dicomweb/studies/{study_uid}/metadata", headers=token()).json()
    assert metadata[0][INSTANCE]["Value"] == [sr.SOPInstanceUID]  # the same object, every time
    for body in (wado.content, str(metadata).encode()):
        assert PHI.encode() not in body


def test_another_tenant_finds_nothing_and_cannot_retrieve(h: Harness) -> None:
    r = stow(h, phi_dicom(seed=9))
    completed(h, r.headers["Location"])
    (match,) = h.client.get("/dicomweb/studies", headers=token()).json()
    study_uid = match[STUDY]["Value"][0]
    stranger = token(tenant="hospital-b")
    assert h.client.get("/dicomweb/studies", headers=stranger).status_code == 204
    assert h.client.get(f"/dicomweb/studies/{study_uid}", headers=stranger).status_code == 404
    assert h.client.get(f"/dicomweb/studies/{study_uid}/metadata", headers=stranger).status_code == 404
    assert h.client.get("/dicomweb/studies", params={"StudyInstanceUID": study_uid}, headers=token()).json()


def test_the_fhir_imaging_study_names_what_dicomweb_serves(h: Harness) -> None:
    r = stow(h, phi_dicom(seed=10))
    completed(h, r.headers["Location"])
    bundle = h.client.get(f"{r.headers['Location']}/result.fhir", headers=token()).json()
    resources = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    study = resources["ImagingStudy"]
    ref = {"reference": f"ImagingStudy/{study['id']}"}
    assert resources["DiagnosticReport"]["imagingStudy"] == [ref]
    assert resources["Observation"]["derivedFrom"] == [ref]
    (match,) = h.client.get("/dicomweb/studies", headers=token()).json()
    study_uid = match[STUDY]["Value"][0]
    assert study["identifier"][0]["value"] == f"urn:oid:{study_uid}"
    series = study["series"][0]
    (instance,) = h.client.get(
        f"/dicomweb/studies/{study_uid}/series/{series['uid']}/instances", headers=token()
    ).json()
    assert series["instance"][0]["uid"] == instance[INSTANCE]["Value"][0]
    assert PHI not in str(bundle)
