"""A CPU training run on a tiny subset lowers the loss and exports a servable, evaluable model."""

from __future__ import annotations

from pathlib import Path

from sightline_common.manifest import load_manifest
from typer.testing import CliRunner

from sightline.ml.cli import ml_app
from sightline.ml.evaluate import run_evaluation
from sightline.ml.train import train
from sightline.ml.train_config import TrainConfig


def test_smoke_training_lowers_the_loss(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        dataset=str(tiny_dataset),
        cache_dir=str(tmp_path / "cache"),
        run_dir=str(tmp_path / "run"),
        repository=str(tmp_path / "repo"),
        input_size=48,
        epochs=8,
        batch_size=8,
        lr=3e-3,
        threads=2,
        architecture={"name": "LesionNet", "kwargs": {"widths": [16, 32, 64, 64], "dropout": 0.0}},
    )
    result = train(cfg, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert min(losses[-3:]) < losses[0]
    manifest = load_manifest(tmp_path / "repo", "derm-cnn")
    assert not manifest.placeholder and manifest.preprocessing.height == 48
    assert manifest.reference_distribution["score"]["n"] == 16
    report = run_evaluation(
        tmp_path / "repo",
        "derm-cnn",
        dataset=tiny_dataset,
        n_bootstrap=20,
        cache_dir=None,
        update_manifest=True,
    )
    assert report["overall"]["n"] == 16
    assert (tmp_path / "repo" / "derm-cnn" / "evaluation" / "REPORT.md").is_file()
    assert load_manifest(tmp_path / "repo", "derm-cnn").metrics["test"]["n"] == 16


def test_cli_exposes_the_commands() -> None:
    out = CliRunner().invoke(ml_app, ["--help"])
    assert out.exit_code == 0
    for command in ("train", "evaluate", "model-card"):
        assert command in out.output
