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


def _grey_dataset(root: Path, patients: int = 16) -> Path:
    """Grey radiograph-like images (a bright patch = 'pneumonia'), two per patient, patient-grouped
    splits, and no sex/age/site columns: the chest X-ray dataset's layout."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for p in range(patients):
        split = ("train", "train", "train", "train", "val", "val", "test", "test")[p % 8]
        label = p % 2
        for k in range(2):
            grey = rng.normal(90, 20, (64, 64)).clip(0, 255)
            if label:
                grey[20:44, 10:30] += 90
            name = f"images/p{p}_{k}.jpeg"
            Image.fromarray(grey.clip(0, 255).astype(np.uint8)).convert("RGB").save(root / name)
            rows.append(
                {
                    "image": name,
                    "image_id": f"p{p}_{k}",
                    "label": label,
                    "patient_id": f"pt{p}",
                    "split": split,
                }
            )
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_chest_xray_config_trains_a_one_channel_patient_grouped_model(tmp_path: Path) -> None:
    """The committed chest_xray.yaml (sizes shrunk): one input channel, the X-ray's routing fields,
    patient-level bootstrap and no subgroup columns in the evaluation."""
    from sightline.ml.train_config import load_config

    config = Path(__file__).resolve().parents[3] / "src/sightline/ml/configs/chest_xray.yaml"
    cfg = load_config(
        config,
        dataset=str(_grey_dataset(tmp_path / "cxr")),
        cache_dir=str(tmp_path / "cache"),
        run_dir=str(tmp_path / "run"),
        repository=str(tmp_path / "repo"),
        input_size=32,
        epochs=2,
        batch_size=4,
        architecture={
            "name": "LesionNet",
            "kwargs": {"widths": [8, 16, 16, 16], "dropout": 0.0, "in_channels": 1},
            "target_layer": "features.3",
        },
    )
    train(cfg, progress=False)
    manifest = load_manifest(tmp_path / "repo", "cxr-pneumonia")
    spec = manifest.preprocessing
    assert spec.colour == "MONOCHROME" and len(spec.mean) == len(spec.std) == 1
    assert spec.accepted_modalities == ["DX", "CR"] and spec.accepted_body_parts == ["CHEST"]
    assert manifest.labels == ["normal", "pneumonia"] and manifest.positive_label == "pneumonia"
    assert manifest.training_data["group_column"] == "patient_id"
    assert manifest.training_data["train_counts"] == {"normal": 8, "pneumonia": 8}
    local = (tmp_path / "repo" / "cxr-pneumonia" / "configs" / "local.pbtxt").read_text()
    assert "dims: [ 1, 32, 32 ]" in local
    report = run_evaluation(
        tmp_path / "repo", "cxr-pneumonia", dataset=tmp_path / "cxr", n_bootstrap=20, cache_dir=None
    )
    assert report["bootstrap_unit"] == "patient" and report["by_attribute"] == {}
    assert "leave_one_site_out" not in report and (Path(report["out"]) / "roc.png").is_file()
