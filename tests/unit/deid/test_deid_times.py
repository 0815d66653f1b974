"""Rule "Retain Longitudinal Temporal Information with Modified Dates": dates, times and
date-times move by one per-patient offset in seconds, so every interval between a patient's
events is kept exactly, across studies and files; the recipe's ``date_shift.times`` chooses
shift (default), remove or keep.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import RecipeError, parse_recipe

from tests.unit.deid.conftest import SECRET
from tests.unit.deid.deid_canary import canary_dataset, to_bytes

RECIPE_TEXT = resources.files("sightline_deid.resources.recipes").joinpath(
    "sightline-basic.yaml").read_text(encoding="utf-8")
#: (Date keyword, Time keyword) pairs written into each study, and DT keywords.
PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"),
         ("AcquisitionDate", "AcquisitionTime"), ("ContentDate", "ContentTime"))


def _study(n: int, day: str, times: tuple[str, ...], acquired: str) -> bytes:
    ds = canary_dataset("CT", n, patient=42, study_date=day)
    for (date_kw, time_kw), time in zip(PAIRS, times, strict=True):
        setattr(ds, date_kw, day)
        setattr(ds, time_kw, time)
    ds.AcquisitionDateTime = acquired
    return to_bytes(ds)


def _run(engine: Deidentifier, data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(engine.deidentify(data, "tenant-a").data))


def _instants(ds: Dataset) -> list[dt.datetime]:
    found = [dt.datetime.strptime(ds[d].value + ds[t].value[:6], "%Y%m%d%H%M%S") for d, t in PAIRS]
    return [*found, dt.datetime.strptime(ds.AcquisitionDateTime[:14], "%Y%m%d%H%M%S")]


def _offset(engine: Deidentifier) -> dt.timedelta:
    out = _run(engine, _study(1, "20200101", ("000000",) * 4, "20200101000000"))
    return _instants(out)[0] - dt.datetime(2020, 1, 1)


def test_times_shift_keeps_every_interval_of_a_patient_across_studies(engine: Deidentifier) -> None:
    offset = _offset(engine)
    assert offset.seconds != 0  # times of day move too, not only whole days
    # times chosen so that some instants cross midnight once shifted, and others do not
    near = (dt.datetime(2020, 1, 1) - offset).time()  # the original time that lands on midnight
    before = (dt.datetime.combine(dt.date(2020, 1, 1), near) - dt.timedelta(seconds=1)).strftime("%H%M%S")
    after = (dt.datetime.combine(dt.date(2020, 1, 1), near) + dt.timedelta(seconds=1)).strftime("%H%M%S")
    files = [
        _study(2, "20200301", (before, after, "000001", "235959.250"), "20200301" + after + ".5"),
        _study(3, "20211231", (after, before, "120000", "070809"), "20220101" + before),
    ]
    originals = [_instants(pydicom.dcmread(BytesIO(f))) for f in files]
    shifted = [_instants(_run(engine, f)) for f in files]
    for orig, moved in zip(originals, shifted, strict=True):
        assert all(o + offset == s for o, s in zip(orig, moved, strict=True))
    out = _run(engine, files[0])
    assert out.ContentTime.endswith(".250") and out.AcquisitionDateTime.endswith(".5")
    assert out.StudyTime != before


def test_times_shift_moves_a_date_without_its_time_by_whole_days(engine: Deidentifier) -> None:
    offset = _offset(engine)
    ds = canary_dataset("CT", 4, patient=42, study_date="20200101")
    del ds.StudyTime
    out = _run(engine, to_bytes(ds))
    assert out.StudyDate == (dt.date(2020, 1, 1) + dt.timedelta(days=offset.days)).strftime("%Y%m%d")


@pytest.mark.parametrize("mode", ["remove", "keep"])
def test_times_remove_or_keep_move_dates_by_whole_days(mode: str) -> None:
    engine = Deidentifier(parse_recipe(RECIPE_TEXT.replace("times: shift", f"times: {mode}")), SECRET)
    out = _run(engine, _study(5, "20200101", ("101500", "101600", "101700", "101800"),
                              "20200101101010.123+0100"))
    shift = dt.datetime.strptime(out.StudyDate, "%Y%m%d") - dt.datetime(2020, 1, 1)
    assert shift.seconds == 0 and -3650 <= shift.days <= -365
    if mode == "remove":
        assert out.StudyTime == "" and out.ContentTime == ""
        assert out.AcquisitionDateTime == out.StudyDate
    else:
        assert out.StudyTime == "101500" and out.ContentTime == "101800"
        assert out.AcquisitionDateTime == out.StudyDate + "101010.123+0100"


def test_times_setting_rejects_an_unknown_mode() -> None:
    with pytest.raises(RecipeError, match=r"date_shift\.times"):
        parse_recipe(RECIPE_TEXT.replace("times: shift", "times: blur"))


def test_times_unparseable_time_is_emptied(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 6, patient=42)
    ds.StudyTime = "10:15:00"  # ACR-NEMA form: not a TM, so not passed through
    ds.SeriesTime = "256000"
    out = _run(engine, to_bytes(ds))
    assert out.StudyTime == "" and out.SeriesTime == ""
