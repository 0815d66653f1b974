"""The committed Triton serving files are what the exporter writes today.

``<version>/model.py`` in the model repository is a copy of ``sightline/ml/triton_python_model.py``
made by ``write_serving_files`` (at export, or by ``refresh_serving_files`` for a committed
model). An edit to one without the other would serve code that no test has read.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest
from sightline_common.manifest import ModelManifest, load_manifest, sha256_file

from .conftest import REPOSITORY

MODELS = sorted(p.parent.name for p in REPOSITORY.glob("*/manifest.json"))
REFRESH = (
    'python -c "from pathlib import Path; from sightline.ml.export import refresh_serving_files; '
    "refresh_serving_files(Path('model_repository'), '{name}')\""
)


def _backend_source() -> str:
    return resources.files("sightline.ml").joinpath("triton_python_model.py").read_text()


def test_the_repository_has_a_model() -> None:
    assert MODELS, f"no model with a manifest under {REPOSITORY}"


@pytest.mark.parametrize("name", MODELS)
def test_python_backend_model_is_the_packaged_source(name: str) -> None:
    manifest = load_manifest(REPOSITORY, name)
    served = REPOSITORY / name / str(manifest.version) / "model.py"
    assert served.read_text() == _backend_source(), (
        f"{served} differs from src/sightline/ml/triton_python_model.py; run {REFRESH.format(name=name)}"
    )
    relative = f"{manifest.version}/model.py"
    assert manifest.artifacts[relative] == sha256_file(served), f"manifest digest of {relative} is stale"


@pytest.mark.parametrize("name", MODELS)
def test_refreshing_the_serving_files_changes_nothing(name: str, tmp_path: Path) -> None:
    """Triton configs and backend file, rewritten by the exporter, have the committed digests."""
    from sightline.ml.export import refresh_serving_files

    committed = load_manifest(REPOSITORY, name)
    shutil.copytree(REPOSITORY / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    refreshed: ModelManifest = refresh_serving_files(tmp_path, name)
    assert refreshed.artifacts == committed.artifacts, f"run {REFRESH.format(name=name)}"
