"""The quasi-identifiers a de-identified instance still shows, and their generalisation.

A de-identified instance keeps, by design, attributes that identify nobody alone but may single a
patient out in combination (Rocher et al., Nature Communications 2019): age, sex, the device
(manufacturer, model, station name, serial number), the body part and the (shifted) study date.
Re-identification risk is measured over them as k-anonymity (the gateway counts how many of a
tenant's de-identified studies share them); this module only names them.

They are read from the *output* data set, after the walk, so they are exactly what is stored,
and from attributes already parsed (no second read of the file). They leave the service only as
:class:`ClassKeys`: HMACs under the tenant's key of the tuple at two generalisation levels. The
gateway can count equal keys but cannot learn or test the values (the tuple space is small, so an
unkeyed hash could be reversed by enumeration; the key never leaves this service).

Levels
    exact        age in years as stored, sex, manufacturer + model + station + serial, body part,
                 shifted year of the study date.
    generalised  age in 5-year bands (90 and over one band), sex, manufacturer + model only, body
                 part, shifted year. This is what a generalised output (:func:`generalise`) shows.

The date bucket is the shifted *year* at both levels: the output keeps day-level shifted dates
(Retain Longitudinal Temporal Information needs the intervals between a patient's events), and a
shifted date says nothing of the real one beyond the offset range (years), so a finer bucket would
only split the tenant's classes by an artefact of the shift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from sightline_deid.core.decoding import value_of
from sightline_deid.core.pseudonym import Pseudonymizer

#: Width of an age band of the generalised level, and the first age of the open top band.
AGE_BAND_YEARS = 5
AGE_TOP_BAND = 90
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_TAG, _SEX_TAG, _BODY_PART_TAG = 0x00101010, 0x00100040, 0x00180015
#: Manufacturer, ManufacturerModelName, StationName, DeviceSerialNumber.
_DEVICE_TAGS = (0x00080070, 0x00081090, 0x00081010, 0x00181000)
#: StudyDate, SeriesDate, AcquisitionDate, ContentDate: the first present gives the year.
_DATE_TAGS = (0x00080020, 0x00080021, 0x00080022, 0x00080023)
_ASCII_VRS = frozenset({"AS", "CS", "DA"})


@dataclass(frozen=True)
class QuasiIdentifiers:
    """One instance's quasi-identifiers as text ("" where absent); never logged or returned."""

    age: str
    sex: str
    device: tuple[str, ...]
    body_part: str
    year: str

    def canonical(self) -> str:
        """An unambiguous encoding of the tuple (the HMAC input). The level is not part of it: a
        tuple with nothing to generalise (no age, no station or serial) shows the same values at
        both levels, so it is one class whichever way it was stored."""
        parts = (self.age, self.sex, *self.device, self.body_part, self.year)
        return "|".join(f"{len(p)}:{p}" for p in parts)


@dataclass(frozen=True)
class ClassKeys:
    """The equivalence-class keys of one instance: HMACs, safe to return and store.

    ``generalisable``: whether the generalised level differs from the exact one (there is an age,
    a station name or a serial number to generalise); otherwise a generalised output would show
    the same quasi-identifiers and is not worth a second de-identification.
    """

    exact: str
    generalised: str
    generalisable: bool


def age_years(age: str) -> int | None:
    """Whole years of a PatientAge (AS) value; under a year (D, W, M) is 0; None if it does not parse."""
    m = _AGE.match(age.strip())
    if m is None:
        return None
    number, unit = int(m.group(1)), m.group(2)
    return number if unit == "Y" else 0 if unit in "DW" else number // 12


def age_band(years: int | None) -> tuple[int, str] | None:
    """The 5-year band of an age, as (its first year, its label); 90 and over is one band."""
    if years is None:
        return None
    if years >= AGE_TOP_BAND:
        return AGE_TOP_BAND, f"{AGE_TOP_BAND}+"
    low = years - years % AGE_BAND_YEARS
    return low, f"{low}-{low + AGE_BAND_YEARS - 1}"


def _text(ds: Dataset, tag: int) -> str:
    """An attribute's value as upper-case text ("" where absent); ASCII VRs read from their bytes."""
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement) and elem.VR in _ASCII_VRS and isinstance(elem.value, bytes):
        v: Any = elem.value.decode("ascii", "replace")
    else:
        v = value_of(ds, tag)
    if v is None:
        return ""
    if not isinstance(v, str):
        v = "\\".join(map(str, v)) if isinstance(v, MultiValue | list) else str(v)
    return str(v).strip(" \x00").upper()


def quasi_identifiers(ds: Dataset) -> QuasiIdentifiers:
    """The exact-level quasi-identifiers of a de-identified data set (its top level only)."""
    age = age_years(_text(ds, _AGE_TAG))
    year = ""
    for tag in _DATE_TAGS:
        date = _text(ds, tag)
        if len(date) >= 4 and date[:4].isdigit():
            year = date[:4]
            break
    return QuasiIdentifiers(
        age="" if age is None else str(age),
        sex=_text(ds, _SEX_TAG),
        device=tuple(_text(ds, tag) for tag in _DEVICE_TAGS),
        body_part=_text(ds, _BODY_PART_TAG),
        year=year,
    )


def generalised(qi: QuasiIdentifiers) -> QuasiIdentifiers:
    """The tuple at the generalised level: age band, the device's manufacturer and model only."""
    band = age_band(int(qi.age) if qi.age else None)
    return replace(qi, age=band[1] if band else "", device=(*qi.device[:2], "", ""))


def class_keys(pseudo: Pseudonymizer, qi: QuasiIdentifiers) -> ClassKeys:
    """Both levels' class keys of ``qi`` under the tenant's key (128-bit hex each)."""
    general = generalised(qi)
    return ClassKeys(pseudo.class_key(qi.canonical()), pseudo.class_key(general.canonical()), general != qi)


def generalise(ds: Dataset) -> None:
    """Generalise the age of a de-identified data set in place: PatientAge becomes the first year of
    its 5-year band ("042Y" -> "040Y", 90 and over -> "090Y", under a year -> "000Y").

    The device is generalised by the recipe itself (its Retain Device Identity rows resolve to
    their basic action), so only the age is rewritten here. AS holds no range, so the band is
    written as its first year; the De-identification Method says the output was generalised.
    """
    band = age_band(age_years(_text(ds, _AGE_TAG)))
    if band is not None:
        ds.PatientAge = f"{band[0]:03d}Y"
