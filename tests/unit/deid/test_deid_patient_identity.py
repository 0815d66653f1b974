"""Rule "patient identity": the PatientID pseudonym and the date shift are keyed on one identity.

The identity is (IssuerOfPatientID, PatientID) of the data set that holds the PatientID. An absent
or empty issuer is its own namespace (the tenant's unqualified identifiers): files of one patient
that arrive with and without an issuer are two identities, each with one pseudonym and one shift,
never one pseudonym with two shifts.
"""

from __future__ import annotations

import datetime as dt
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import canary_dataset, to_bytes


def _out(engine: Deidentifier, *, n: int, issuer: str | None, pid: str = "MRN0001") -> Dataset:
    ds = canary_dataset("CT", n, study_date="20200101")
    ds.PatientID = pid
    if issuer is None:
        del ds.IssuerOfPatientID
    else:
        ds.IssuerOfPatientID = issuer
    return pydicom.dcmread(BytesIO(engine.deidentify(to_bytes(ds), "tenant-a").data))


def _shift(out: Dataset) -> dt.timedelta:
    shifted = dt.datetime.strptime(out.StudyDate + out.StudyTime[:6], "%Y%m%d%H%M%S")
    return shifted - dt.datetime(2020, 1, 1, 10, 15)


def test_patient_identity_one_pseudonym_one_shift_with_and_without_issuer(engine: Deidentifier) -> None:
    with_issuer = [_out(engine, n=n, issuer="HOSPITAL-A") for n in (1, 2)]
    without = [_out(engine, n=n, issuer=issuer) for n, issuer in ((3, None), (4, ""))]
    for group in (with_issuer, without):
        assert len({o.PatientID for o in group}) == 1
        assert len({_shift(o) for o in group}) == 1
    # the documented rule: a missing issuer is its own namespace, with its own pseudonym and shift
    assert with_issuer[0].PatientID != without[0].PatientID
    assert _shift(with_issuer[0]) != _shift(without[0])


def test_patient_identity_same_mrn_under_two_issuers_is_two_patients(engine: Deidentifier) -> None:
    a = _out(engine, n=1, issuer="HOSPITAL-A")
    b = _out(engine, n=2, issuer="HOSPITAL-B")
    assert a.PatientID != b.PatientID
    assert _shift(a) != _shift(b)
