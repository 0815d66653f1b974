"""Fixtures shared by every kind of test."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# pydicom must never try to download test data during tests (only files on disk are used).
os.environ.setdefault("PYDICOM_DATA_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so that none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
