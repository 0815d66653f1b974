"""Envelope encryption of re-identification records: a data key per record under a tenant key.

A record opens only with its tenant's key, at its own place (tenant and study); any change to
either sealed blob, another tenant's key, or a record moved to another study is refused.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from sightline_gateway.core.envelope import InvalidKeyFile, TenantKeys, Unopenable, key_id

RECORD = b'{"patient_id":"ZQXPHIMRN12345"}'


def keys(*tenants: str) -> TenantKeys:
    return TenantKeys({t: [os.urandom(32)] for t in tenants})


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


def test_a_record_opens_with_its_tenant_key_and_holds_no_plaintext() -> None:
    k = keys("hospital-a")
    sealed = k.seal("hospital-a", "study-1", RECORD)
    assert k.open("hospital-a", "study-1", sealed) == RECORD
    assert b"ZQXPHI" not in sealed.wrapped_key + sealed.ciphertext
    # A fresh data key per record: the same identifiers seal to different bytes each time.
    again = k.seal("hospital-a", "study-1", RECORD)
    assert again.wrapped_key != sealed.wrapped_key and again.ciphertext != sealed.ciphertext


@pytest.mark.parametrize("part", ["wrapped_key", "ciphertext"])
@pytest.mark.parametrize("at", [0, 20, -1])
def test_a_tampered_record_is_refused(part: str, at: int) -> None:
    k = keys("hospital-a")
    sealed = k.seal("hospital-a", "study-1", RECORD)
    blob = getattr(sealed, part)
    tampered = replace(sealed, **{part: flip(blob, at % len(blob))})
    with pytest.raises(Unopenable):
        k.open("hospital-a", "study-1", tampered)


def test_a_wrong_tenant_key_is_refused() -> None:
    sealed = keys("hospital-a").seal("hospital-a", "study-1", RECORD)
    other = keys("hospital-a")  # the same tenant name, another key
    with pytest.raises(Unopenable, match="not held"):
        other.open("hospital-a", "study-1", sealed)
    # Even a key claiming the right id does not open it.
    forged = TenantKeys({"hospital-a": [os.urandom(32)]})
    with pytest.raises(Unopenable):
        forged.open("hospital-a", "study-1", replace(sealed, key_id=key_id(forged._keys["hospital-a"][0])))


def test_a_record_moved_to_another_study_or_tenant_is_refused() -> None:
    shared = os.urandom(32)
    k = TenantKeys({"hospital-a": [shared], "hospital-b": [shared]})
    sealed = k.seal("hospital-a", "study-1", RECORD)
    with pytest.raises(Unopenable):
        k.open("hospital-a", "study-2", sealed)
    with pytest.raises(Unopenable):
        k.open("hospital-b", "study-1", sealed)


def test_a_rotated_key_file_still_opens_older_records(tmp_path: Path) -> None:
    old, new = os.urandom(32), os.urandom(32)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"hospital-a": base64.b64encode(old).decode()}))
    sealed = TenantKeys.load(path).seal("hospital-a", "study-1", RECORD)
    path.write_text(json.dumps({"hospital-a": [base64.b64encode(k).decode() for k in (new, old)]}))
    rotated = TenantKeys.load(path)
    assert rotated.open("hospital-a", "study-1", sealed) == RECORD
    assert rotated.seal("hospital-a", "study-2", RECORD).key_id == key_id(new)  # the first is current


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '["a list"]',
        '{"hospital-a": "c2hvcnQ="}',
        '{"hospital-a": "!!notbase64ZQXPHI"}',
        '{"t": 1}',
    ],
)
def test_a_bad_key_file_is_refused_without_showing_its_content(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(InvalidKeyFile) as refused:
        TenantKeys.load(path)
    assert "ZQXPHI" not in str(refused.value) and "c2hvcnQ" not in str(refused.value)
