"""`sightline evaluate` on a folder a new user brings: any split names, clear errors, own output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sightline_common.errors import InvalidInput, NotFound
from sightline_common.imaging import resize
from typer.testing import CliRunner

from sightline.ml import data as ds
from sightline.ml.cli import ml_app
from sightline.ml.evaluate import run_evaluation
from sightline.ml.subgroups import summary

from .conftest import make_tiny_dataset
from .tiny_model import SIZE, write_tiny_model


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_tiny_model(tmp_path / "repo")
    return tmp_path / "repo"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "folder", per_split_label=6)


def _evaluate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        ml_app, ["evaluate", "--bootstrap", "20", "--no-cache", *args], env={"COLUMNS": "200"}
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_folder_without_split_column_and_free_split_names(repo: Path, folder: Path, tmp_path: Path) -> None:
    meta = pd.read_csv(folder / "metadata.csv")
    meta[["image", "label"]].to_csv(folder / "metadata.csv", index=False)
    code, output = _evaluate(
        "--repository", str(repo), "--dataset", str(folder), "--out", str(tmp_path / "a")
    )
    assert code == 0, output
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text())["overall"]["n"] == len(meta)

    split = np.where(pd.factorize(meta["lesion_id"])[0] % 2, "hospital_b", "hospital_a")
    meta.assign(split=split).to_csv(folder / "other.csv", index=False)
    args = ["--repository", str(repo), "--dataset", str(folder), "--metadata", "other.csv"]
    code, output = _evaluate(
        *args, "--split", "hospital_b", "--external", "Hospital B", "--out", str(tmp_path / "b")
    )
    assert code == 0, output
    result = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert result["split"] == "hospital_b" and result["overall"]["n"] == (split == "hospital_b").sum()
    assert (
        (tmp_path / "b" / "REPORT.md")
        .read_text()
        .startswith("# External validation of derm-cnn v1 on Hospital B (the hospital_b split")
    )


def test_missing_column_is_a_message_not_a_traceback(repo: Path, folder: Path) -> None:
    pd.read_csv(folder / "metadata.csv").drop(columns=["label"]).to_csv(folder / "metadata.csv", index=False)
    code, output = _evaluate("--repository", str(repo), "--dataset", str(folder))
    assert code == 2
    assert "lacks the required column(s) label" in output and "Traceback" not in output


def test_empty_split_and_missing_manifest_say_what_and_where(repo: Path, folder: Path) -> None:
    with pytest.raises(
        InvalidInput, match=r"split .validation. has no images .* splits present: test, train, val"
    ):
        run_evaluation(repo, "derm-cnn", dataset=folder, split="validation", cache_dir=None)
    with pytest.raises(NotFound, match=f"looked for {repo.resolve()}/derm-cnn-v2/manifest.json.*derm-cnn"):
        run_evaluation(repo, "derm-cnn-v2", dataset=folder, cache_dir=None)


def test_default_output_is_a_new_folder_and_the_served_model_is_untouched(
    repo: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = (repo / "derm-cnn" / "manifest.json").read_bytes()
    code, output = _evaluate("--repository", str(repo), "--dataset", str(folder))
    assert code == 0, output
    assert (repo / "derm-cnn" / "manifest.json").read_bytes() == before
    assert (
        not (repo / "derm-cnn" / "evaluation").exists() and not (repo / "derm-cnn" / "MODEL_CARD.md").exists()
    )
    (written,) = (tmp_path / "var" / "evaluations").iterdir()
    assert (written / "REPORT.md").is_file() and (written / "roc_site.png").is_file()
    # what a user sees: progress of the long steps, then the figures
    assert "inference" in output and "bootstrap" in output
    assert "AUROC" in output and "site=rosendahl" in output and written.name in output


def test_update_manifest_keeps_the_served_evaluation_consistent(repo: Path, folder: Path) -> None:
    evaluation = repo / "derm-cnn" / "evaluation"
    evaluation.mkdir()
    y, p = np.array([0, 1] * 20), np.linspace(0.1, 0.9, 40)
    loso = {
        "held_out_site": "rosendahl",
        "model": "derm-cnn-loso-rosendahl",
        "threshold": 0.5,
        "held_out_site_all_splits": summary(y, p, 0.5, 10, 1),
        "other_sites_test": summary(y, p[::-1].copy(), 0.5, 10, 2),
    }
    (evaluation / "evaluation.json").write_text(
        json.dumps({"version": 1, "split": "test", "external_validation": loso})
    )
    for name in ("roc_loso_rosendahl.png", "calibration_loso_rosendahl.png", "roc_localization.png"):
        (evaluation / name).write_bytes(b"png")
    code, output = _evaluate("--repository", str(repo), "--dataset", str(folder), "--update-manifest")
    assert code == 0, output
    result = json.loads((evaluation / "evaluation.json").read_text())
    section = result["leave_one_site_out"]
    assert section["results"] == [loso] and "carried_over" in section
    assert [m["site"] for m in section["missing"]] == []  # the tiny folder has no site with 50 positives
    assert (evaluation / "roc_loso_rosendahl.png").is_file()
    assert not (evaluation / "roc_localization.png").exists()  # stale: not in the new report
    assert "leave rosendahl out" in (evaluation / "REPORT.md").read_text()
    manifest = json.loads((repo / "derm-cnn" / "manifest.json").read_text())
    assert manifest["metrics"]["test"] == result["overall"]
    assert manifest["metrics"]["leave_one_site_out"] == section
    card = (repo / "derm-cnn" / "MODEL_CARD.md").read_text()
    assert f"AUROC {result['overall']['auroc']['value']:.3f}" in card


def test_update_manifest_refuses_an_external_run(repo: Path, folder: Path) -> None:
    code, output = _evaluate(
        "--repository", str(repo), "--dataset", str(folder), "--update-manifest", "--external", "B"
    )
    assert code == 2 and "external" in output
    assert not (repo / "derm-cnn" / "evaluation").exists()


def test_image_cache_misses_when_an_image_changes(folder: Path, tmp_path: Path) -> None:
    spec = write_tiny_model(tmp_path / "spec-repo").preprocessing
    first = ds.load_dataset(folder, spec, cache_dir=tmp_path / "cache")
    rel = first.meta["image"][0]
    Image.new("RGB", (200, 150), (0, 255, 0)).save(folder / rel)
    st = (folder / rel).stat()
    os.utime(folder / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = ds.load_dataset(folder, spec, cache_dir=tmp_path / "cache")
    assert second.images.shape[1:3] == (SIZE, SIZE)
    np.testing.assert_array_equal(second.images[0], resize(ds.decode_rgb(folder / rel), spec))
    assert not np.array_equal(first.images[0], second.images[0])


def test_leave_one_site_out_for_every_eligible_site_is_the_headline(
    repo: Path, folder: Path, tmp_path: Path
) -> None:
    loso_repo = tmp_path / "loso"
    write_tiny_model(loso_repo, name="derm-cnn-loso-rosendahl")
    meta = pd.read_csv(folder / "metadata.csv")
    result = run_evaluation(
        repo,
        "derm-cnn",
        dataset=folder,
        out=tmp_path / "out",
        n_bootstrap=10,
        cache_dir=None,
        loso_repositories=[tmp_path / "elsewhere", loso_repo],
        loso_min_positives=5,
    )
    section = result["leave_one_site_out"]
    assert sorted(section["sites"]) == ["rosendahl", "vidir_modern"]
    (entry,) = section["results"]
    assert entry["held_out_site"] == "rosendahl"
    assert entry["held_out_site_all_splits"]["n"] == (meta["site"] == "rosendahl").sum()  # every split
    assert section["missing"] == [{"site": "vidir_modern", "model": "derm-cnn-loso-vidir_modern"}]
    assert section["worst_site"] == "rosendahl"
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert report.index("## Headline: leave-one-site-out") < report.index("## Overall")
    assert "Worst held-out site: **rosendahl**" in report
    assert "no held-out model found:** vidir_modern" in report
    assert (tmp_path / "out" / "roc_loso_rosendahl.png").is_file()
