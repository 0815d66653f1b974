"""No planted identity survives anywhere in the output bytes, across modalities and encodings."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import canary_corpus, survivors

CORPUS = canary_corpus(per_modality=2)


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[n for n, _ in CORPUS])
def test_no_canary_survives(name: str, data: bytes, engine: Deidentifier) -> None:
    assert survivors(data), "the fixture must plant canaries"
    result = engine.deidentify(data, "tenant-a")
    assert survivors(result.data) == []
    out = pydicom.dcmread(BytesIO(result.data))
    assert out.PatientIdentityRemoved == "YES"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPClassUID == pydicom.dcmread(BytesIO(data)).SOPClassUID
    assert out.PatientSex == "F" and out.PatientAge == "046Y"  # patient characteristics retained
    assert out.Manufacturer == "ACME"  # device identity retained
    assert result.data[:128] == b"\x00" * 128
    out.pixel_array  # noqa: B018 - pixel data still decodes


def test_method_codes_name_the_profile_and_every_option(engine: Deidentifier) -> None:
    out = pydicom.dcmread(BytesIO(engine.deidentify(CORPUS[0][1], "tenant-a").data))
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113104", "113105", "113107", "113108", "113109", "113111"}
    assert all(item.CodingSchemeDesignator == "DCM" for item in out.DeidentificationMethodCodeSequence)
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_summary_has_counts_and_no_values(engine: Deidentifier) -> None:
    summary = engine.deidentify(CORPUS[0][1], "tenant-a").summary.as_dict()
    assert summary["recipe"] == "sightline-basic" and summary["actions"]["X"] > 0
    assert "CNRY" not in repr(summary) and "7777" not in repr(summary)
