"""Issue 13: Idempotency-Key as the IETF draft describes it (a key names one request)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.gateway.gateway_fixtures import harness, phi_dicom


@pytest.fixture
def h(tmp_path: Path):
    with harness(tmp_path) as h:
        yield h


def test_the_same_key_and_body_answer_the_same_study(h) -> None:
    data = phi_dicom(seed=1)
    first = h.submit(data, headers={"Idempotency-Key": "k-same"})
    again = h.submit(data, headers={"Idempotency-Key": "k-same"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]


def test_the_same_key_with_a_different_body_is_refused_with_a_reason(h) -> None:
    first = h.submit(phi_dicom(seed=1), headers={"Idempotency-Key": "k-reused"})
    assert first.status_code == 202
    other = h.submit(phi_dicom(seed=2), headers={"Idempotency-Key": "k-reused"})
    assert other.status_code == 422, other.text
    body = other.json()
    assert body["reason"] == "idempotency-key-reused" and "Idempotency-Key" in body["detail"]
    assert other.headers["content-type"].startswith("application/problem+json")


def test_the_same_key_with_other_options_is_refused(h) -> None:
    data = phi_dicom(seed=3)
    assert h.submit(data, headers={"Idempotency-Key": "k-opt"}).status_code == 202
    assert h.submit(data, headers={"Idempotency-Key": "k-opt"}, explain="false").status_code == 422
