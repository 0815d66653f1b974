"""Fixtures of the preprocess unit tests (helpers for real files are in preprocess_files.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from preprocess_files import REPO
from sightline_common.manifest import ModelManifest, PreprocessSpec, load_manifest


@pytest.fixture(scope="session")
def manifest() -> ModelManifest:
    return load_manifest(REPO / "model_repository", "derm-cnn")


@pytest.fixture(scope="session")
def spec(manifest: ModelManifest) -> PreprocessSpec:
    return manifest.preprocessing
