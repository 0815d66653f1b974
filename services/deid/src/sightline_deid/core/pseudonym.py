"""Keyed, per-tenant pseudonyms: UIDs, identifiers and the per-patient date shift.

Every value is an HMAC-SHA256 under a key derived from the service secret and the tenant, so
the same input maps to the same output within a tenant (studies stay linked), differently across
tenants (tenants cannot join their data), and nobody without the secret can reverse or test a
guess. The original value never leaves this module except as an HMAC input.
"""

from __future__ import annotations

import hashlib
import hmac

_UID_ROOT = "2.25."


class Pseudonymizer:
    """Pseudonyms for one tenant."""

    def __init__(self, secret: bytes, tenant: str) -> None:
        if not secret:
            raise ValueError("pseudonym secret must not be empty")
        self._key = hmac.new(secret, b"sightline-deid/tenant/" + tenant.encode(), hashlib.sha256).digest()

    def _mac(self, purpose: bytes, value: str) -> bytes:
        return hmac.digest(self._key, purpose + b"\x00" + value.encode("utf-8", "surrogateescape"),
                           "sha256")

    def uid(self, value: str) -> str:
        """A ``2.25.<int>`` UID (PS3.5 B.2: a 128-bit integer) derived from ``value``."""
        return _UID_ROOT + str(int.from_bytes(self._mac(b"uid", value.strip("\x00 "))[:16], "big"))

    def identifier(self, value: str) -> str:
        """A 16-character hex pseudonym: fits SH (16) and LO (64) value representations."""
        return self._mac(b"id", value.strip()).hex()[:16].upper()

    def date_offset_days(self, patient_key: str, lo: int, hi: int) -> int:
        """A whole-day shift in [lo, hi], the same for every study of this patient."""
        span = hi - lo + 1
        return lo + int.from_bytes(self._mac(b"dateshift", patient_key.strip())[:8], "big") % span
