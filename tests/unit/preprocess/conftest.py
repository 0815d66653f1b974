"""Fixtures of the preprocess unit tests (helpers for real files are in preprocess_files.py)."""

from __future__ import annotations

import pytest
from sightline_common.manifest import ModelManifest, PreprocessSpec, load_manifest

from tests.unit.preprocess.preprocess_files import REPO


@pytest.fixture(scope="session")
def manifest() -> ModelManifest:
    return load_manifest(REPO / "model_repository", "derm-cnn")


@pytest.fixture(scope="session")
def spec(manifest: ModelManifest) -> PreprocessSpec:
    return manifest.preprocessing
