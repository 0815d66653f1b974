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


@pytest.fixture(scope="session")
def ham10000() -> Path:
    """The HAM10000 folder (SIGHTLINE_DATASET, else ../shared); skip, saying why, when absent."""
    from sightline.ml.data import dataset_root

    root = dataset_root()
    if not (root / "metadata.csv").is_file():
        pytest.skip(
            f"HAM10000 not found at {root} (set SIGHTLINE_DATASET to a folder with metadata.csv + images/)"
        )
    return root
