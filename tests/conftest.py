"""Fixtures shared by every kind of test."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

import pytest

# pydicom must never try to download test data during tests (only files on disk are used).
os.environ.setdefault("PYDICOM_DATA_NO_DOWNLOAD", "1")

REPO = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def skip_or_fail_in_ci(reason: str) -> NoReturn:
    """Skip a test whose committed artifact or installed tool is missing; under ``CI=true`` fail.

    A skip reads as a pass in a summary: in CI, where ``make test`` installs every tool and the
    checkout holds every artifact, a missing one is a regression that must not pass unnoticed.
    """
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing artifact or tool fails, not skips)", pytrace=False)
    pytest.skip(reason)


#: After the last test, how long the interpreter may take to exit before its threads' stacks are
#: printed and it exits 1: a thread or executor a test left running must not hang CI silently.
EXIT_GRACE_S = float(os.environ.get("SIGHTLINE_TEST_EXIT_GRACE_S", "600"))


def pytest_unconfigure(config: pytest.Config) -> None:
    main = threading.main_thread()
    lingering = [t.name for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()]
    if lingering:
        print(f"\nnon-daemon threads alive after the session: {', '.join(lingering)}", file=sys.stderr)
    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True)


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports."""
    from sightline.stack import free_loopback_ports

    return free_loopback_ports(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ham10000() -> Path:
    """The HAM10000 folder (SIGHTLINE_DATASET, else ../shared); skip, saying why, when absent.

    A data set from outside the checkout that CI does not fetch: it skips under ``CI=true`` too.
    """
    from sightline.ml.data import dataset_root

    root = dataset_root()
    if not (root / "metadata.csv").is_file():
        pytest.skip(
            f"HAM10000 not found at {root} (set SIGHTLINE_DATASET to a folder with metadata.csv + images/)"
        )
    return root
