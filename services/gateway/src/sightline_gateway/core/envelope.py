"""Envelope encryption of re-identification records: a data key per record, wrapped by a tenant key.

Each record gets a fresh 256-bit data key; the record is sealed with it under AES-256-GCM and the
data key is itself sealed (wrapped) under the tenant's key, so that the database holds neither
key in the clear and rotating a tenant key only re-wraps data keys. Both seals bind the tenant and
the record's id as associated data: a record copied to another study or tenant does not open.

Tenant keys come from a key file (locally) or a Secret mounted as one (in the chart, KMS-style):
JSON mapping each tenant to its key, 32 random bytes base64-encoded, or to a list of keys whose
first is current and the others still unwrap older records (rotation). A key is named by its id,
the first 16 hex digits of its SHA-256: the record says which key wrapped it, never the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_CONTEXT = b"sightline-reidentification/v1"


class InvalidKeyFile(ValueError):
    """The tenant key file is unreadable or malformed (the message never shows a key)."""


class Unopenable(Exception):
    """A sealed record that does not open: tampered with, moved, or sealed under a key not held."""


@dataclass(frozen=True)
class Sealed:
    """A record as the database keeps it: which tenant key wrapped its data key, and two AEAD blobs."""

    key_id: str
    wrapped_key: bytes  # nonce + AES-GCM(tenant key, data key)
    ciphertext: bytes  # nonce + AES-GCM(data key, plaintext)


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


def _aad(tenant: str, record_id: str, part: bytes) -> bytes:
    return b"\0".join((_CONTEXT, part, tenant.encode(), record_id.encode()))


def _seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise Unopenable("the record does not open under the tenant's key at its place") from None


class TenantKeys:
    """Each tenant's keys (current first); seals and opens records under them."""

    def __init__(self, keys: Mapping[str, Sequence[bytes]]) -> None:
        for tenant, held in keys.items():
            if not held or any(len(k) != KEY_BYTES for k in held):
                raise InvalidKeyFile(f"tenant {tenant!r}: each key must be {KEY_BYTES} bytes")
        self._keys = {tenant: list(held) for tenant, held in keys.items()}

    @classmethod
    def load(cls, path: Path) -> TenantKeys:
        """Read a key file: ``{"tenant": "<base64 key>" | ["<current>", "<older>", ...]}``."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidKeyFile(f"tenant key file unreadable ({type(exc).__name__})") from None
        if not isinstance(raw, dict):
            raise InvalidKeyFile("tenant key file must map each tenant to its key(s)")
        keys: dict[str, list[bytes]] = {}
        for tenant, value in raw.items():
            texts = [value] if isinstance(value, str) else value
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise InvalidKeyFile(f"tenant {tenant!r}: a base64 key or a list of them")
            try:
                keys[str(tenant)] = [base64.b64decode(t.strip(), validate=True) for t in texts]
            except binascii.Error:
                raise InvalidKeyFile(f"tenant {tenant!r}: a key is not base64") from None
        return cls(keys)

    def holds(self, tenant: str) -> bool:
        return tenant in self._keys

    def seal(self, tenant: str, record_id: str, plaintext: bytes) -> Sealed:
        """``plaintext`` under a new data key, wrapped by the tenant's current key."""
        current = self._keys[tenant][0]
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = _seal(current, data_key, _aad(tenant, record_id, b"key"))
        ciphertext = _seal(data_key, plaintext, _aad(tenant, record_id, b"record"))
        return Sealed(key_id(current), wrapped, ciphertext)

    def open(self, tenant: str, record_id: str, sealed: Sealed) -> bytes:
        """The plaintext, else :class:`Unopenable` (no key of the tenant's with that id, or tampered)."""
        key = next((k for k in self._keys.get(tenant, ()) if key_id(k) == sealed.key_id), None)
        if key is None:
            raise Unopenable("the key that wrapped this record is not held for its tenant")
        data_key = _open(key, sealed.wrapped_key, _aad(tenant, record_id, b"key"))
        return _open(data_key, sealed.ciphertext, _aad(tenant, record_id, b"record"))
