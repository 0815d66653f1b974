"""Real files from pydicom's test data, pydicom-data and deid-data, read only from disk.

Each file gets exactly its pinned outcome (see :mod:`tests.unit.deid.real_files`): de-identified
(output re-parses, identity removed, original patient name and id gone from the bytes) or refused
for the one reason pinned for it. A bug that refuses more files, or refuses one for another
reason, fails here; so does one that raises. Why each refusal is legitimate:

- (none for burned-in text: Secondary Capture, OT, ultrasound and photographs are read by OCR,
  their text blacked out, and de-identified);
- missing-attribute: DICOMDIRs and test fragments without SOP Class or Study Instance UID, a file
  meta without Transfer Syntax UID;
- not-dicom: no Part 10 preamble and file meta; truncated: MR_truncated.dcm;
- malformed: badVR.dcm (NumberOfFrames "1A"); JPEG-lossy.dcm and
  JPEG2000-embedded-sequence-delimiter.dcm, whose pixel data no installed decoder reads, so their
  frames cannot be checked for burned-in text. The deflated image_dfl.dcm is inflated (within the
  inflated-size limit) and de-identified like the other Secondary Captures.
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.real_files import DEIDENTIFIED, installed_files, outcome, pinned_outcomes

FILES = installed_files()
PINNED = pinned_outcomes()


def _identity(data: bytes) -> list[bytes]:
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        values = [str(ds.get("PatientName") or ""), str(ds.get("PatientID") or "")]
    except Exception:
        return []
    return [v.encode() for v in values if len(v.strip()) >= 6]


def test_every_installed_file_has_a_pinned_outcome() -> None:
    assert sorted(FILES) == sorted(PINNED)
    assert Counter(PINNED.values()) == {
        DEIDENTIFIED: 212, "missing-attribute": 19, "not-dicom": 6, "truncated": 1, "malformed": 3,
    }


@pytest.mark.parametrize("name", sorted(FILES))
def test_real_file_gets_its_pinned_outcome(name: str, engine: Deidentifier) -> None:
    data = Path(FILES[name]).read_bytes()
    assert outcome(engine, data) == PINNED[name]
    if PINNED[name] != DEIDENTIFIED:
        return
    result = engine.deidentify(data, "tenant-a")
    out = pydicom.dcmread(BytesIO(result.data))
    assert out.PatientIdentityRemoved == "YES"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    for value in _identity(data):
        assert value not in result.data
