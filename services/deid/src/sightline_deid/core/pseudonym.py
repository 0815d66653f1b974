"""Keyed, per-tenant pseudonyms: UIDs, identifiers and the per-patient date shift.

Every value is an HMAC-SHA256 under a key derived from the service secret and the tenant, so
the same input maps to the same output within a tenant (studies stay linked), differently across
tenants (tenants cannot join their data), and nobody without the secret can reverse or test a
guess. The original value never leaves this module except as an HMAC input.

A patient is identified by (IssuerOfPatientID, PatientID), and both the PatientID pseudonym and
the date shift are keyed on that one identity (:func:`patient_identity`). An absent or empty
issuer is its own namespace, the tenant's unqualified identifiers: its pseudonym is the plain
identifier pseudonym, as before issuers were taken into account. The same MRN under two issuers
is two patients; one patient whose files arrive with and without an issuer is two identities,
each with its own pseudonym and its own shift (never one pseudonym with two shifts).
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

    def patient(self, issuer: str, patient_id: str) -> str:
        """The PatientID pseudonym of the identity (issuer, id); see :func:`patient_identity`."""
        if not issuer.strip("\x00 "):
            return self.identifier(patient_id)
        return self._mac(b"patient", patient_identity(issuer, patient_id)).hex()[:16].upper()

    def class_key(self, canonical: str) -> str:
        """A 32-hex-digit key of a quasi-identifier tuple (see :mod:`.quasi`): equal tuples of one
        tenant get equal keys, and nobody without the secret can test a guessed tuple."""
        return self._mac(b"quasi", canonical).hex()[:32]

    def date_offset_seconds(self, patient_key: str, lo_days: int, hi_days: int) -> int:
        """An offset in seconds, from day ``lo_days`` to the end of day ``hi_days``, the same for
        every study and file of this patient."""
        span = (hi_days - lo_days + 1) * 86400
        mac = self._mac(b"dateshift-seconds", patient_key.strip())
        return lo_days * 86400 + int.from_bytes(mac[:8], "big") % span


def patient_identity(issuer: str, patient_id: str) -> str:
    """The one key of a patient: issuer and id, unambiguously joined (an issuer may hold '/')."""
    issuer, patient_id = issuer.strip("\x00 "), patient_id.strip("\x00 ")
    return f"pid:{len(issuer)}:{issuer}/{patient_id}"
