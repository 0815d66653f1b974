"""Pseudonyms are stable within a tenant, differ across tenants, and dates keep their intervals."""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import canary_dataset, to_bytes


def _out(engine: Deidentifier, data: bytes, tenant: str) -> Dataset:
    return pydicom.dcmread(BytesIO(engine.deidentify(data, tenant).data))


def _day(value: str) -> dt.date:
    return dt.datetime.strptime(value, "%Y%m%d").date()


def test_same_tenant_same_pseudonyms(engine: Deidentifier) -> None:
    data = to_bytes(canary_dataset("CT", 1))
    a, b = _out(engine, data, "tenant-a"), _out(engine, data, "tenant-a")
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
               "PatientID", "AccessionNumber", "StudyDate"):
        assert a[kw].value == b[kw].value, kw
    assert a.ReferencedImageSequence[0].ReferencedSOPInstanceUID == \
        b.ReferencedImageSequence[0].ReferencedSOPInstanceUID


def test_different_tenants_different_pseudonyms(engine: Deidentifier) -> None:
    data = to_bytes(canary_dataset("CT", 1))
    a, b = _out(engine, data, "tenant-a"), _out(engine, data, "tenant-b")
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "AccessionNumber"):
        assert a[kw].value != b[kw].value, kw


def test_uid_form_is_2_25_integer(engine: Deidentifier) -> None:
    out = _out(engine, to_bytes(canary_dataset("MR", 2)), "tenant-a")
    for uid in (out.SOPInstanceUID, out.StudyInstanceUID, out.SeriesInstanceUID):
        root, number = uid[:5], uid[5:]
        assert root == "2.25." and number.isdigit() and int(number) < 2**128 and len(uid) <= 64


def test_same_patient_same_date_shift_and_intervals_preserved(engine: Deidentifier) -> None:
    first = to_bytes(canary_dataset("CT", 1, patient=77, study_date="20200101"))
    second = to_bytes(canary_dataset("MR", 2, patient=77, study_date="20200315"))
    a, b = _out(engine, first, "tenant-a"), _out(engine, second, "tenant-a")
    assert a.PatientID == b.PatientID
    assert (_day(b.StudyDate) - _day(a.StudyDate)).days == 74
    offset = dt.datetime.strptime(a.StudyDate + a.StudyTime, "%Y%m%d%H%M%S") - dt.datetime(2020, 1, 1, 10, 15)
    assert -3650 <= offset.days <= -365 and offset.seconds != 0
    # within one study, every date and date-time moves by the same offset (a date alone, by its days)
    assert (_day(a.ContentDate) - _day("19880808")).days == offset.days
    acquired = dt.datetime.strptime(a.AcquisitionDateTime, "%Y%m%d%H%M%S")
    assert acquired - dt.datetime(1977, 7, 7, 10, 10, 10) == offset


def test_date_shift_differs_between_tenants(engine: Deidentifier) -> None:
    data = to_bytes(canary_dataset("CT", 1, patient=5, study_date="20200101"))
    shifts = {_out(engine, data, f"tenant-{i}").StudyDate for i in range(6)}
    assert len(shifts) > 1
