"""Which models a service serves: the ones named, else every model of the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from sightline_common.errors import NotFound
from sightline_common.model_repository import repository_models, served_models

from tests.conftest import REPO


def test_every_model_with_a_manifest_by_default() -> None:
    repository = REPO / "model_repository"
    assert repository_models(repository) == ["cxr-pneumonia", "derm-cnn"]
    assert served_models(repository, []) == ["cxr-pneumonia", "derm-cnn"]
    assert served_models(repository, ["derm-cnn", "derm-cnn"]) == ["derm-cnn"]


def test_a_named_model_without_a_manifest_or_an_empty_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "half-copied").mkdir()  # a folder without a manifest is not a model
    with pytest.raises(NotFound, match="no model with a manifest"):
        served_models(tmp_path, [])
    with pytest.raises(NotFound, match="ct-model"):
        served_models(REPO / "model_repository", ["derm-cnn", "ct-model"])
