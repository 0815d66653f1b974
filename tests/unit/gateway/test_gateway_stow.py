"""STOW-RS responses to PS3.18 10.5.3: ReferencedSOPSequence, FailedSOPSequence with FailureReason."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage

from tests.unit.gateway.gateway_fixtures import PHI, Harness, harness, phi_dicom, token

REFERENCED, FAILED, REASON = "00081199", "00081198", "00081197"
SOP_CLASS, SOP_INSTANCE, RETRIEVE_URL = "00081150", "00081155", "00081190"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as h:
        yield h


def ct(seed: int) -> bytes:
    """A CT image: a SOP class the reference model does not take."""
    ds = dcmread(io.BytesIO(phi_dicom(seed=seed)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stow(h: Harness, *instances: bytes) -> httpx.Response:
    boundary = "b-0123"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + i + b"\r\n"
            for i in instances
        )
        + f"--{boundary}--\r\n".encode()
    )
    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return h.client.post("/dicomweb/studies", content=body, headers={"Content-Type": ct, **token()})


def uid(instance: bytes) -> str:
    return str(dcmread(io.BytesIO(instance)).SOPInstanceUID)


def test_all_stored_is_200_with_each_instance_referenced(h: Harness) -> None:
    instances = [phi_dicom(seed=1), phi_dicom(seed=2)]
    r = stow(h, *instances)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i[SOP_INSTANCE]["Value"][0] for i in body[REFERENCED]["Value"]] == [uid(i) for i in instances]
    assert body[RETRIEVE_URL]["Value"][0].endswith(r.headers["Location"])
    assert FAILED not in body and PHI not in r.text


def test_an_unsupported_sop_class_fails_alone_with_0122_and_the_rest_is_stored(h: Harness) -> None:
    photo, scan = phi_dicom(seed=3), ct(4)
    r = stow(h, photo, scan)
    assert r.status_code == 202, r.text
    body = r.json()
    (failed,) = body[FAILED]["Value"]
    assert failed[SOP_CLASS]["Value"] == [CTImageStorage] and failed[SOP_INSTANCE]["Value"] == [uid(scan)]
    assert failed[REASON] == {"vr": "US", "Value": [0x0122]}
    assert [i[SOP_INSTANCE]["Value"][0] for i in body[REFERENCED]["Value"]] == [uid(photo)]
    study = h.client.get(r.headers["Location"], headers=token()).json()
    assert study["instances"] == 1


def test_nothing_storable_is_409_with_every_failure_and_no_study(h: Harness) -> None:
    r = stow(h, ct(5), ct(6))
    assert r.status_code == 409, r.text
    body = r.json()
    assert [f[REASON]["Value"] for f in body[FAILED]["Value"]] == [[0x0122], [0x0122]]
    assert REFERENCED not in body and RETRIEVE_URL not in body and "location" not in r.headers
