"""Burned-in annotation policy: photographs need BurnedInAnnotation=NO, SC is refused, US is blanked."""

from __future__ import annotations

from io import BytesIO

import pydicom
import pytest
from sightline_common.errors import UnprocessableInput
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import SOP_CLASSES, canary_dataset, to_bytes


def test_recipe_rule_photographic_explicit_no_burned_in_passes(engine: Deidentifier) -> None:
    result = engine.deidentify(to_bytes(canary_dataset("XC", 1)), "tenant-a")
    assert result.summary.burned_in == "passed:photographic-explicit-no-burned-in"


@pytest.mark.parametrize("value", [None, "YES", ""])
def test_photographic_without_explicit_no_is_refused(engine: Deidentifier, value: str | None) -> None:
    ds = canary_dataset("XC", 1)
    if value is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = value
    with pytest.raises(UnprocessableInput) as info:
        engine.deidentify(to_bytes(ds), "tenant-a")
    assert info.value.extra["reason"] == "burned-in-annotation"


def test_secondary_capture_is_refused_by_default(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"
    with pytest.raises(UnprocessableInput):
        engine.deidentify(to_bytes(ds), "tenant-a")


def test_burned_in_yes_on_ct_is_refused(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnprocessableInput):
        engine.deidentify(to_bytes(ds), "tenant-a")


def test_recipe_rule_ultrasound_top_banner_blanks_the_region(engine: Deidentifier) -> None:
    ds = canary_dataset("US", 1)
    assert ds.SOPClassUID == SOP_CLASSES["US"]
    result = engine.deidentify(to_bytes(ds), "tenant-a")
    out = pydicom.dcmread(BytesIO(result.data))
    pixels = out.pixel_array
    assert (pixels[:64] == 0).all() and (pixels[64:] != 0).any()
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}
