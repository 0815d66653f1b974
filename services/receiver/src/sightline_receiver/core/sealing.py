"""Encryption at rest of spooled instances: AES-256-GCM, bound to the file's place in the spool.

A sealed file is ``MAGIC_SEALED``, a random 96-bit nonce, then the ciphertext and its tag. The
associated data names the tenant and the hashed study and instance UIDs the file is filed under,
so a file moved to another study or tenant does not open. Without a key (development only) a file
is ``MAGIC_PLAIN`` then the instance; a spool with a key refuses such files, and the reverse.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC_SEALED = b"SLSPOOL\x01"
MAGIC_PLAIN = b"SLSPOOL\x00"
KEY_BYTES = 32
_NONCE_BYTES = 12


class InvalidKey(ValueError):
    """The spool key file is unreadable or does not hold 32 base64-encoded bytes."""


class Unreadable(Exception):
    """A spooled file that does not open: truncated, tampered with, moved, or sealed with another key."""


def load_key(path: Path) -> bytes:
    """The spool key: a file holding 32 random bytes, base64-encoded (surrounding whitespace ignored).

    Make one with ``head -c 32 /dev/urandom | base64``. The error never shows the file's content.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidKey(f"spool key file unreadable ({type(exc).__name__})") from None
    try:
        key = base64.b64decode(b"".join(text.split()), validate=True)
    except binascii.Error:
        raise InvalidKey("spool key file is not base64") from None
    if len(key) != KEY_BYTES:
        raise InvalidKey(f"spool key must be {KEY_BYTES} bytes, base64-encoded (got {len(key)})")
    return key


class Sealer:
    """Seals and opens spooled files with one key, or in the clear when there is none."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    def seal(self, data: bytes, place: bytes) -> bytes:
        if self._aead is None:
            return MAGIC_PLAIN + data
        nonce = os.urandom(_NONCE_BYTES)
        return MAGIC_SEALED + nonce + self._aead.encrypt(nonce, data, place)

    def open(self, blob: bytes, place: bytes) -> bytes:
        magic, body = blob[: len(MAGIC_SEALED)], blob[len(MAGIC_SEALED) :]
        if self._aead is None:
            if magic != MAGIC_PLAIN:
                raise Unreadable("sealed file, but the spool has no key")
            return body
        if magic != MAGIC_SEALED:
            raise Unreadable("not a sealed spool file")
        try:
            return self._aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], place)
        except (InvalidTag, ValueError):
            raise Unreadable("does not open with the spool key at its place") from None
