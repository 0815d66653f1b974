"""The way back: a study's original identifiers, kept sealed, and result objects filed under them.

At intake, before de-identification discards them, a study's original Study/Series/SOP Instance
UIDs, PatientID with its issuer and AccessionNumber become an :class:`OriginalStudy`; it exists in
memory only until it is sealed in the tenant's re-identification record (``core.envelope``). The
result forwarder opens the record and :func:`reidentify` files the AI objects (the SR and the
heatmap Segmentation) under the patient's own study: the original StudyInstanceUID, PatientID,
issuer and accession; the objects keep their own new series and instance UIDs, and every
reference to an evidence image names its original UIDs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from sightline_gateway.core.routing import Header, Identifiers

#: Attributes the de-identified image gave the AI objects that would contradict the patient's
#: study in the PACS (pseudonyms, shifted dates, the de-identification markers): emptied (Type 2)
#: or removed (Type 3) on the way back. The PACS holds the real values already.
_EMPTIED = ("PatientName", "PatientBirthDate", "StudyDate", "StudyTime", "StudyID", "ReferringPhysicianName")
_REMOVED = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "LongitudinalTemporalInformationModified",
    "OtherPatientIDsSequence",
)


@dataclass(frozen=True, repr=False)
class OriginalStudy:
    """A study's original identifiers (PHI): the study's, and each instance's (series, SOP) in order."""

    study_uid: str
    patient_id: str
    issuer: str
    accession: str
    instances: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        return f"OriginalStudy(<withheld>, {len(self.instances)} instances)"

    @classmethod
    def from_identifiers(cls, identifiers: Sequence[Identifiers]) -> OriginalStudy:
        """The study as its instances name it (the first instance's study-level values)."""
        first = identifiers[0] if identifiers else Identifiers()
        return cls(
            study_uid=first.study_uid,
            patient_id=first.patient_id,
            issuer=first.issuer,
            accession=first.accession,
            instances=tuple((i.series_uid, i.sop_uid) for i in identifiers),
        )

    @classmethod
    def from_headers(cls, headers: Iterable[Header]) -> OriginalStudy:
        return cls.from_identifiers([h.identity for h in headers])

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> OriginalStudy:
        raw = json.loads(data)
        return cls(
            study_uid=str(raw["study_uid"]),
            patient_id=str(raw["patient_id"]),
            issuer=str(raw["issuer"]),
            accession=str(raw["accession"]),
            instances=tuple((str(s), str(i)) for s, i in raw["instances"]),
        )


def uid_map(original: OriginalStudy, deidentified: Sequence[bytes]) -> dict[str, str]:
    """De-identified UID -> original UID, for the study and each stored instance's series and SOP."""
    mapping: dict[str, str] = {}
    for data, (series_uid, sop_uid) in zip(deidentified, original.instances, strict=False):
        ds = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        )
        for tag, value in (
            ("StudyInstanceUID", original.study_uid),
            ("SeriesInstanceUID", series_uid),
            ("SOPInstanceUID", sop_uid),
        ):
            if value and tag in ds:
                mapping[str(ds[tag].value)] = value
    return mapping


def _replace_uids(ds: Dataset, mapping: Mapping[str, str]) -> None:
    """Every UI value (at any depth) that names a de-identified object names the original instead."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _replace_uids(item, mapping)
        elif element.VR == "UI" and element.value:
            if isinstance(element.value, str):
                element.value = mapping.get(element.value, element.value)
            else:
                element.value = [mapping.get(str(v), str(v)) for v in element.value]


def reidentify(data: bytes, original: OriginalStudy, mapping: Mapping[str, str]) -> bytes:
    """An AI result object filed under the patient's own study (see the module docstring).

    ``mapping``: :func:`uid_map` of the study. The object's own SeriesInstanceUID and
    SOPInstanceUID are new UIDs Sightline made and are kept.
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    own = (str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    _replace_uids(ds, mapping)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = own
    ds.file_meta.MediaStorageSOPInstanceUID = UID(own[1])
    ds.StudyInstanceUID = original.study_uid
    ds.PatientID = original.patient_id
    ds.AccessionNumber = original.accession
    if original.issuer:
        ds.IssuerOfPatientID = original.issuer
    elif "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    for keyword in _EMPTIED:
        if keyword in ds:
            setattr(ds, keyword, "")
    for keyword in _REMOVED:
        if keyword in ds:
            delattr(ds, keyword)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
