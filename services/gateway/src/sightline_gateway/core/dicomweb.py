"""QIDO-RS and WADO-RS over what Sightline produced: one SR result per completed study.

The study is named by its de-identified StudyInstanceUID; the result's series and instance UIDs
derive from the study id, so every query and retrieval names the same objects.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.uid import Comprehensive3DSRStorage, generate_uid

SR_SERIES_NUMBER = 900


@dataclass(frozen=True)
class ResultObject:
    """The DICOM identity of a study's result SR."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str = str(Comprehensive3DSRStorage)


def result_object(study_id: str, deid_study_uid: str) -> ResultObject:
    """Stable UIDs of the study's result SR (derived from the study id, not random per request)."""
    return ResultObject(
        study_uid=deid_study_uid,
        series_uid=str(generate_uid(entropy_srcs=[study_id, "sightline-result-series"])),
        sop_instance_uid=str(generate_uid(entropy_srcs=[study_id, "sightline-result-sr"])),
    )


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def study_json(obj: ResultObject, base: str) -> dict[str, Any]:
    """A QIDO-RS study match (PS3.18 10.6.3.3.1 attributes Sightline can answer)."""
    return {
        "0020000D": _attr("UI", obj.study_uid),
        "00080061": _attr("CS", "SR"),
        "00201206": _attr("IS", 1),
        "00201208": _attr("IS", 1),
        "00081190": _attr("UR", f"{base}/studies/{obj.study_uid}"),
    }


def series_json(obj: ResultObject, base: str) -> dict[str, Any]:
    return {
        "0020000D": _attr("UI", obj.study_uid),
        "0020000E": _attr("UI", obj.series_uid),
        "00080060": _attr("CS", "SR"),
        "00200011": _attr("IS", SR_SERIES_NUMBER),
        "00201209": _attr("IS", 1),
        "00081190": _attr("UR", f"{base}/studies/{obj.study_uid}/series/{obj.series_uid}"),
    }


def instance_json(obj: ResultObject, base: str) -> dict[str, Any]:
    return {
        "0020000D": _attr("UI", obj.study_uid),
        "0020000E": _attr("UI", obj.series_uid),
        "00080016": _attr("UI", obj.sop_class_uid),
        "00080018": _attr("UI", obj.sop_instance_uid),
        "00200013": _attr("IS", 1),
        "00081190": _attr(
            "UR", f"{base}/studies/{obj.study_uid}/series/{obj.series_uid}/instances/{obj.sop_instance_uid}"
        ),
    }


def multipart_related(instances: Iterable[bytes]) -> tuple[bytes, str]:
    """(body, content type) of a WADO-RS instance response (PS3.18 8.7.3.3)."""
    boundary = f"sightline-{secrets.token_hex(12)}"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            for data in instances
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def heatmap_uids(study_id: str) -> tuple[str, str]:
    """Stable (series, instance) UIDs of the study's heatmap Segmentation."""
    return (
        str(generate_uid(entropy_srcs=[study_id, "sightline-heatmap-series"])),
        str(generate_uid(entropy_srcs=[study_id, "sightline-heatmap-seg"])),
    )
