"""benchmarks.compare_evaluations: two reports of one split side by side, per site, drawn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.compare_evaluations import main


def _report(auroc: float, split: str = "val") -> dict:
    def group(value: float, ci: bool = True) -> dict:
        return {
            "n": 100,
            "positives": 30 if ci else 3,
            "auroc": {"value": value, "ci95": [value - 0.05, value + 0.05] if ci else [None, None]},
            "ece": {"value": 0.03, "ci95": [0.02, 0.04]},
            "sensitivity": {"value": 0.9, "ci95": [0.8, 0.95]},
            "specificity": {"value": 0.6, "ci95": [0.5, 0.7]},
        }

    return {
        "split": split,
        "model": "derm-cnn",
        "overall": group(auroc),
        "by_attribute": {"site": {"a": group(auroc - 0.1), "b": group(0.7, ci=False)}},
    }


def test_per_site_rows_and_a_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for label, auroc in (("v1", 0.88), ("v2", 0.86)):
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(_report(auroc)))
        paths += [str(path), label]
    comparison = main([*paths, "--out", str(tmp_path / "out")])
    table = capsys.readouterr().out
    assert "| a | v2 | 100 (30) | 0.760 (0.710-0.810) |" in table
    assert "| b | v1 | 100 (3) | 0.700 |" in table  # no CI for a group below the minimum
    assert comparison["runs"]["v1"]["pooled"]["auroc"]["value"] == 0.88
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 10_000


def test_reports_of_different_splits_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_report(0.8, "val")))
    (tmp_path / "b.json").write_text(json.dumps(_report(0.8, "test")))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "a.json"), "v", str(tmp_path / "b.json"), "t", "--out", str(tmp_path / "o")])
