"""Re-identification risk: the quasi-identifier tuple of an output, its generalisation and class keys.

A study's class keys decide its k in the gateway: equal quasi-identifiers must give equal keys
within a tenant, different ones different keys, and the generalised level must merge what the
recipe's bands merge (ages 40-44, 90 and over, stations of one device model).
"""

from __future__ import annotations

from dataclasses import replace
from io import BytesIO

import pydicom
import pytest
from sightline_common.errors import InvalidInput
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.quasi import age_band, age_years, generalised, quasi_identifiers
from sightline_deid.core.recipe import Recipe

from tests.unit.deid.conftest import SECRET
from tests.unit.deid.deid_canary import canary_dataset, to_bytes


def _study(
    n: int = 1, *, age: str = "046Y", station: str = "CNRYSTATION1", serial: str = "SN-1", model: str = "M1"
) -> bytes:
    """Study ``n`` of one patient (one date shift, so one shifted year) with these values."""
    ds = canary_dataset("CT", n, patient=1)
    ds.PatientAge, ds.StationName, ds.DeviceSerialNumber, ds.ManufacturerModelName = (
        age,
        station,
        serial,
        model,
    )
    ds.BodyPartExamined = "CHEST"
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("stored", "years"),
    [
        ("046Y", 46),
        ("089Y", 89),
        ("090Y", 90),
        ("104Y", 104),
        ("018M", 1),
        ("006W", 0),
        ("003D", 0),
        ("46", None),
        ("", None),
        ("04AY", None),
    ],
)
def test_age_in_years_from_an_as_value(stored: str, years: int | None) -> None:
    assert age_years(stored) == years


@pytest.mark.parametrize(
    ("years", "band"),
    [
        (0, (0, "0-4")),
        (4, (0, "0-4")),
        (40, (40, "40-44")),
        (44, (40, "40-44")),
        (45, (45, "45-49")),
        (89, (85, "85-89")),
        (90, (90, "90+")),
        (104, (90, "90+")),
        (None, None),
    ],
)
def test_age_bands_are_five_years_and_ninety_and_over_is_one(years: int | None, band: object) -> None:
    assert age_band(years) == band


def test_the_tuple_is_read_from_the_output_and_generalised_to_band_and_device_model(
    engine: Deidentifier,
) -> None:
    out = pydicom.dcmread(BytesIO(engine.deidentify(_study(age="093Y"), "tenant-a").data))
    qi = quasi_identifiers(out)
    assert (qi.age, qi.sex, qi.body_part) == ("93", "F", "CHEST")
    assert qi.device == ("ACME", "M1", "CNRYSTATION1", "SN-1")  # retained by Retain Device Identity
    assert qi.year == str(out.StudyDate)[:4]  # the shifted year, as stored
    general = generalised(qi)
    assert (general.age, general.device, general.year) == ("90+", ("ACME", "M1", "", ""), qi.year)


def test_equal_quasi_identifiers_share_a_class_and_bands_merge_at_the_generalised_level(
    engine: Deidentifier,
) -> None:
    a = engine.deidentify(_study(1, age="041Y"), "tenant-a").classes
    b = engine.deidentify(_study(2, age="041Y"), "tenant-a").classes  # another study, same values
    c = engine.deidentify(_study(3, age="043Y", station="OTHER", serial="SN-2"), "tenant-a").classes
    d = engine.deidentify(_study(4, age="043Y", model="M2"), "tenant-a").classes
    other_tenant = engine.deidentify(_study(1, age="041Y"), "tenant-b").classes
    assert a is not None and b is not None and c is not None and d is not None and other_tenant is not None
    assert a == b
    assert c.exact != a.exact and c.generalised == a.generalised  # 41/43, two stations of model M1
    assert d.generalised != a.generalised  # another device model stays apart
    assert other_tenant.exact != a.exact  # keyed per tenant: tenants cannot join their classes
    assert len(a.exact) == 32 and int(a.exact, 16) >= 0


def test_generalised_output_keeps_the_band_and_the_model_only(engine: Deidentifier) -> None:
    result = engine.deidentify(_study(age="093Y"), "tenant-a", generalise=True)
    out = pydicom.dcmread(BytesIO(result.data))
    assert out.PatientAge == "090Y"
    assert out.ManufacturerModelName == "M1" and out.Manufacturer == "ACME"
    for keyword in ("DeviceSerialNumber", "StationName"):  # X/Z/D without Retain Device Identity
        assert out.get(keyword) in (None, "", "ANONYMIZED")
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert "113109" not in codes  # Retain Device Identity is no longer claimed
    assert out.DeidentificationMethod.endswith("generalised")
    assert result.summary.generalised and result.summary.as_dict()["generalised"] is True
    # The generalised output's exact tuple is its generalised one: it falls in the same class.
    exact = engine.deidentify(_study(2, age="091Y", station="B", serial="C"), "tenant-a").classes
    assert result.classes is not None and exact is not None
    assert result.classes.generalised == exact.generalised
    assert quasi_identifiers(out).age == "90"


def test_a_recipe_without_the_option_refuses_to_generalise(recipe: Recipe) -> None:
    off = Deidentifier(replace(recipe, generalised=None), SECRET)
    with pytest.raises(InvalidInput) as info:
        off.deidentify(_study(), "tenant-a", generalise=True)
    assert info.value.extra.get("reason") == "generalise-off"
    assert "046" not in info.value.detail


def test_nothing_to_generalise_is_one_class_at_both_levels(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1, patient=1)
    for keyword in ("PatientAge", "StationName", "DeviceSerialNumber"):
        if keyword in ds:
            delattr(ds, keyword)
    classes = engine.deidentify(to_bytes(ds), "tenant-a").classes
    assert classes is not None and not classes.generalisable
    assert classes.exact == classes.generalised
    aged = engine.deidentify(_study(2), "tenant-a").classes
    assert aged is not None and aged.generalisable
