"""Fixtures shared by every kind of test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pydicom must never try to download test data during tests (only files on disk are used).
os.environ.setdefault("PYDICOM_DATA_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports."""
    from sightline.stack import free_loopback_ports

    return free_loopback_ports(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
