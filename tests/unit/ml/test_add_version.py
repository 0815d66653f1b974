"""`sightline add-version`: a trained export joins the repository as the next version, the one
before keeps its own manifest and evaluation; a different input size is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from sightline_common.errors import InvalidInput
from sightline_common.manifest import load_manifest, own_version_manifest, verify_artifact
from sightline_explain.core.nets import build_model
from typer.testing import CliRunner

from sightline.ml.card_versions import repository_versions
from sightline.ml.cli import ml_app
from sightline.ml.export import export_model_atomically
from sightline.ml.placeholder import placeholder_fields
from sightline.ml.versions import add_version


def _export(repo: Path, staging: Path, seed: int, size: int | None = None) -> None:
    fields = copy.deepcopy(placeholder_fields())
    if size is not None:
        fields["preprocessing"].update(height=size, width=size)
    torch.manual_seed(seed)
    export_model_atomically(build_model(fields["architecture"]), repo, fields, staging=staging)


def test_the_new_version_is_named_and_the_old_one_keeps_what_describes_it(tmp_path: Path) -> None:
    repo, source = tmp_path / "repo", tmp_path / "run"
    _export(repo, tmp_path / "staging", seed=0)
    _export(source, tmp_path / "staging", seed=1)
    name = load_manifest(repo, "derm-cnn").name
    (repo / name / "evaluation").mkdir()
    (repo / name / "evaluation" / "evaluation.json").write_text('{"model": {"version": 1}}')
    (repo / name / "evaluation" / "REPORT.md").write_text("version 1's report")

    out = CliRunner().invoke(ml_app, ["add-version", "--source", str(source), "--repository", str(repo)])
    assert out.exit_code == 0, out.output
    assert "version 2 added" in out.output

    served = load_manifest(repo, name)
    assert served.version == 2
    # Version 2's weights are the run's, checked against the new manifest's digests.
    weights = verify_artifact(repo, served, "2/model.pt").read_bytes()
    assert weights == (source / name / "1" / "model.pt").read_bytes()
    verify_artifact(repo, served, "2/model.py")
    # Version 1 stays loadable by its own manifest, and its report moved under evaluation/1/.
    kept = own_version_manifest(repo, name, 1)
    assert kept is not None and kept.version == 1
    verify_artifact(repo, kept, "1/model.pt")
    assert (repo / name / "evaluation" / "1" / "REPORT.md").read_text() == "version 1's report"
    assert not (repo / name / "evaluation" / "evaluation.json").exists()
    assert [m.version for m in repository_versions(repo, name)] == [1]


def test_a_version_with_another_input_size_is_refused(tmp_path: Path) -> None:
    repo, source = tmp_path / "repo", tmp_path / "run"
    _export(repo, tmp_path / "staging", seed=0)
    _export(source, tmp_path / "staging", seed=1, size=96)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    with pytest.raises(InvalidInput, match="differs from the served"):
        add_version(repo, "derm-cnn", source)
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
