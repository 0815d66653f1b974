"""Explain per model version: a version a request names is loaded from its own manifest entry
(sha256-checked), explains with its own checkpoint and says which version it is; a version the
repository lacks is the 409 it always was; a tampered one is refused."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sightline_common.errors import Conflict, IntegrityError
from sightline_common.storage import LocalDirStore
from sightline_explain.core.engine import EngineSet

from tests.unit.explain.explain_fixtures import dicom_bytes, synthetic_lesion

from .conftest import MODEL, REPOSITORY


def _two_versions(tmp: Path) -> Path:
    """derm-cnn with version 2 a byte copy of version 1 and its own manifest."""
    dst = tmp / "repo" / MODEL
    shutil.copytree(
        REPOSITORY / MODEL, dst, ignore=shutil.ignore_patterns("*.onnx", "__pycache__", "evaluation")
    )
    shutil.copytree(dst / "1", dst / "2")
    manifest = json.loads((dst / "manifest.json").read_text())
    digest = hashlib.sha256((dst / "2" / "model.pt").read_bytes()).hexdigest()
    manifest.update(version=2, artifacts={"2/model.pt": digest})
    (dst / "2" / "manifest.json").write_text(json.dumps(manifest))
    return tmp / "repo"


def test_a_named_version_is_loaded_checked_and_explains_as_itself(tmp_path: Path) -> None:
    engines = EngineSet.load(_two_versions(tmp_path), [MODEL], LocalDirStore(tmp_path / "objects"))
    served, v2 = engines.get(MODEL, None), engines.get(MODEL, 2)
    assert served.manifest.version == 1 and v2.manifest.version == 2
    assert engines.get(MODEL, 2) is v2 and engines.get(MODEL, 1) is served
    image = served.prepare(dicom_bytes(synthetic_lesion(np.random.default_rng(0), size=160)[0]))
    out = engines.compute([(engines.engine_key(served), image, 1), (engines.engine_key(v2), image, 1)])
    np.testing.assert_allclose(out[0][0], out[1][0], atol=1e-6)  # the same bytes: the same map
    response = v2.publish(image, out[1][0], out[1][1], 1, "explanations/v2-test", 0.0)
    assert response.model_version == 2 and response.model_sha256 == v2.manifest.artifacts["2/model.pt"]


def test_a_version_the_repository_lacks_is_a_conflict(tmp_path: Path) -> None:
    engines = EngineSet.load(_two_versions(tmp_path), [MODEL], LocalDirStore(tmp_path / "objects"))
    with pytest.raises(Conflict) as exc:
        engines.get(MODEL, 3)
    assert exc.value.extra["reason"] == "model-mismatch"


def test_a_tampered_version_is_refused(tmp_path: Path) -> None:
    repo = _two_versions(tmp_path)
    pt = repo / MODEL / "2" / "model.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    engines = EngineSet.load(repo, [MODEL], LocalDirStore(tmp_path / "objects"))
    with pytest.raises(IntegrityError):
        engines.get(MODEL, 2)
    assert engines.get(MODEL, None).manifest.version == 1  # the served version is unaffected
