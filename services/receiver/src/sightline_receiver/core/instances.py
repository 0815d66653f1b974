"""What the receiver checks in an instance before it holds it for the gateway.

De-identification and the model's own checks happen behind the gateway's intake; here only what
decides the DIMSE status: the identifiers a study is assembled by and the declared SOP class.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from sightline_receiver.core.refusals import Refused, Status


@dataclass(frozen=True)
class InstanceIds:
    """The identifiers the receiver files an instance by (held in memory, never logged)."""

    study_uid: str
    sop_instance_uid: str


def identify(part10: bytes, context_sop_class: str) -> InstanceIds:
    """The instance's study and instance UIDs, checked against its presentation context.

    Raises :class:`Refused` with 0xA900 when the data set's SOP class is not the one negotiated
    and with 0xC000 when it cannot be parsed or lacks its identifiers.
    """
    sop_class, ids = _read(part10)
    if UID(sop_class) != UID(context_sop_class):
        raise Refused(Status.DATASET_DOES_NOT_MATCH, "SOPClassUID differs from the presentation context")
    return ids


def ids_of(part10: bytes) -> InstanceIds:
    """The study and instance UIDs of an instance taken earlier (read back from the spool)."""
    return _read(part10)[1]


def _read(part10: bytes) -> tuple[str, InstanceIds]:
    try:
        ds = dcmread(io.BytesIO(part10), stop_before_pixels=True, force=False)
        sop_class = ds.get("SOPClassUID")
        study_uid = ds.get("StudyInstanceUID")
        sop_uid = ds.get("SOPInstanceUID")
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise Refused(Status.CANNOT_UNDERSTAND, f"unparseable data set ({type(exc).__name__})") from None
    if not sop_class or not study_uid or not sop_uid:
        raise Refused(Status.CANNOT_UNDERSTAND, "SOPClassUID, StudyInstanceUID or SOPInstanceUID missing")
    return str(sop_class), InstanceIds(study_uid=str(study_uid), sop_instance_uid=str(sop_uid))
