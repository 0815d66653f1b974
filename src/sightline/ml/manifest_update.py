"""Record an evaluation's summary in the model's manifest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sightline_common.manifest import ModelManifest

from sightline.ml.export import write_manifest


def record_evaluation(repository: Path, manifest: ModelManifest, result: dict[str, Any]) -> ModelManifest:
    """Write the evaluation summary into manifest.json's metrics (not an artifact: digests are unaffected)."""
    metrics = dict(manifest.metrics)
    metrics[result["split"]] = result["overall"]
    metrics["subgroups"] = {
        a: {
            g: {
                "n": v["n"],
                "positives": v["positives"],
                "auroc": v["auroc"]["value"],
                "sensitivity": v["sensitivity"]["value"],
                "specificity": v["specificity"]["value"],
                "ece": v["ece"]["value"],
            }
            for g, v in per.items()
        }
        for a, per in result["by_attribute"].items()
    }
    metrics["largest_gaps"] = {
        a: {m: g.get("gap") for m, g in per.items()} for a, per in result["gaps"].items()
    }
    metrics["flagged_gaps"] = result["flagged_gaps"]
    metrics.pop("external_validation", None)  # the single-site form before leave_one_site_out
    if "leave_one_site_out" in result:
        metrics["leave_one_site_out"] = result["leave_one_site_out"]
    updated = manifest.model_copy(update={"metrics": metrics})
    write_manifest(repository / manifest.name / "manifest.json", updated)
    return updated


# Plots an evaluation writes; any of these the new report does not show is stale and removed.
PLOT_PATTERNS = ("roc_*.png", "calibration*.png")


def publish(repository: Path, manifest: ModelManifest, result: dict[str, Any], out: Path) -> None:
    """Make ``result`` the served model's evaluation: folder, manifest metrics and model card, in step.

    A leave-one-site-out section of the previous evaluation of the same model version is kept
    (with its plots) when this run did not recompute it; plots the new report does not show are
    removed; the model card is regenerated from the new evaluation.
    """
    from sightline.ml.loso_results import LOSO_MIN_POSITIVES, loso_entries
    from sightline.ml.modelcard import write_model_card
    from sightline.ml.report import render_report

    previous_path = out / "evaluation.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    carried = loso_entries(previous) if previous.get("version") == result["version"] else []
    section = result.get("leave_one_site_out")
    if carried and (section is None or not section["results"]):
        kept = {e["held_out_site"] for e in carried}
        section = dict(section or {"min_positives": LOSO_MIN_POSITIVES, "sites": sorted(kept), "missing": []})
        section["results"] = carried
        section["missing"] = [m for m in section["missing"] if m["site"] not in kept]
        section["carried_over"] = "from the previous evaluation of this version (not recomputed)"
        result["leave_one_site_out"] = section
    report = render_report(result)
    previous_path.write_text(json.dumps(result, indent=2) + "\n")
    (out / "REPORT.md").write_text(report)
    for pattern in PLOT_PATTERNS:
        for plot in out.glob(pattern):
            if f"({plot.name})" not in report:
                plot.unlink()
    record_evaluation(repository, manifest, result)
    write_model_card(repository, manifest.name)
