"""Why an instance is refused, as a DIMSE status (PS3.4 B.2.3, PS3.7 C) and a PHI-free reason."""

from __future__ import annotations

import hashlib
from enum import IntEnum


class Status(IntEnum):
    """C-STORE response statuses the receiver sends."""

    SUCCESS = 0x0000
    NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x Refused: Not Authorized
    SOP_CLASS_NOT_SUPPORTED = 0x0122  # Refused: SOP Class not supported
    OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
    DATASET_DOES_NOT_MATCH = 0xA900  # Error: Data Set does not match SOP Class
    CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand


class Refused(Exception):
    """An instance the receiver will not take; ``reason`` names a rule or limit, never a value."""

    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def ref(value: str) -> str:
    """A short hash that lets logs correlate an AE title or UID without showing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]
