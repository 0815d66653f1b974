"""STOW-RS responses (PS3.18 10.5.3): which instances were stored, which failed, and why.

The response names the instances by the UIDs the caller sent (its own identifiers, returned to it
alone, never stored or logged); the study is stored de-identified under new UIDs. Each instance
is routed from its header as received: one that no model enabled for the tenant accepts fails
with 0x0122 and is never de-identified or stored.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sightline_common.errors import InvalidInput

from sightline_gateway.core.routing import (
    REFUSED,
    ROUTED,
    SERVED_PER_STUDY,
    Header,
    Route,
    read_header,
    refusal_codes,
)

#: FailureReason (0008,1197) values (PS3.18 Table 10.5.3-2 / PS3.4 Annex B).
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000

RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


@dataclass(frozen=True)
class Part:
    """One instance of a STOW-RS request: its UIDs (empty when unreadable) and why it fails, if it does."""

    data: bytes
    sop_class: str
    sop_instance: str
    failure: int | None = None
    header: Header | None = None


def inspect(instances: Sequence[bytes]) -> list[Part]:
    """Each instance's UIDs and routing header; the ones that cannot be read fail here."""
    parts = []
    for data in instances:
        try:
            ds = dcmread(
                io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"]
            )
            sop_class, sop_instance = str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
            header = read_header(data)
        except (InvalidDicomError, InvalidInput, EOFError, ValueError, KeyError, OSError):
            parts.append(Part(data, "", "", CANNOT_UNDERSTAND))
            continue
        if not sop_class or not sop_instance:
            parts.append(Part(data, sop_class, sop_instance, CANNOT_UNDERSTAND))
        else:
            parts.append(Part(data, sop_class, sop_instance, header=header))
    return parts


def assign(
    parts: Sequence[Part], served: Sequence[str], route: Callable[[Sequence[Header]], Route]
) -> tuple[list[Part], tuple[str, ...]]:
    """The parts with routing failures marked, and the models the study's stored parts go to.

    Each readable part is routed on its own (``route``: the tenant's routing). The study goes to
    the model that accepts the most parts (the first in ``served`` order on a tie); the parts it
    does not accept fail with 0x0122, as do those no model accepts.
    """
    accepted_by = [set(route([p.header]).models) if p.header and p.failure is None else set() for p in parts]
    chosen = max(served, key=lambda m: sum(m in a for a in accepted_by), default=None)
    marked = [
        p if p.failure is not None or chosen in a else replace(p, failure=SOP_CLASS_NOT_SUPPORTED)
        for p, a in zip(parts, accepted_by, strict=True)
    ]
    headers = [p.header for p in marked if p.failure is None and p.header is not None]
    models = route(headers).models[:SERVED_PER_STUDY] if headers else ()
    refused = sum(p.failure is not None and o.failure is None for p, o in zip(marked, parts, strict=True))
    if refused:
        ROUTED.labels(REFUSED).inc(refused)
    for name in models:
        ROUTED.labels(name).inc(len(headers))
    return marked, models


def refusals(
    parts: Sequence[Part],
    marked: Sequence[Part],
    served: Sequence[str],
    route: Callable[[Sequence[Header]], Route],
) -> str | None:
    """The audit codes of the instances routing refused (``marked`` by :func:`assign` from ``parts``).

    ``refused=N/M`` (refused of received) and, per model in ``served`` order, the rules that
    refused those instances (:func:`~sightline_gateway.core.routing.refusal_codes`); ``None``
    when routing refused none. Never a UID or other value of the instances.
    """
    rules: dict[str, set[str]] = {}
    refused = 0
    for before, after in zip(parts, marked, strict=True):
        if before.failure is None and after.failure is not None and before.header is not None:
            refused += 1
            for name, rule in route([before.header]).refusals.items():
                rules.setdefault(name, set()).add(rule)
    if not refused:
        return None
    ordered = {name: rules[name] for name in served if name in rules}
    ordered |= {name: codes for name, codes in rules.items() if name not in ordered}
    return refusal_codes(ordered, (refused, len(parts)))


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response(parts: Sequence[Part], retrieve_url: str | None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, DICOM JSON body): 200 all stored, 202 some failed, 409 none stored."""
    stored = [p for p in parts if p.failure is None]
    failed = [p for p in parts if p.failure is not None]
    body: dict[str, Any] = {}
    if retrieve_url is not None and stored:
        body[RETRIEVE_URL] = {"vr": "UR", "Value": [retrieve_url]}
    if failed:
        body[FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {
                    REFERENCED_SOP_CLASS_UID: _ui(p.sop_class),
                    REFERENCED_SOP_INSTANCE_UID: _ui(p.sop_instance),
                    FAILURE_REASON: {"vr": "US", "Value": [p.failure]},
                }
                for p in failed
            ],
        }
    if stored:
        body[REFERENCED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {REFERENCED_SOP_CLASS_UID: _ui(p.sop_class), REFERENCED_SOP_INSTANCE_UID: _ui(p.sop_instance)}
                for p in stored
            ],
        }
    status = 200 if not failed else 202 if stored else 409
    return status, body


def all_failed(parts: Sequence[Part], reason: int = PROCESSING_FAILURE) -> list[Part]:
    """The parts as failed with ``reason`` (the study as a whole was refused: fail closed)."""
    return [replace(p, failure=p.failure or reason) for p in parts]
