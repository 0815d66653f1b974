"""Record an evaluation's summary in the model's manifest.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sightline_common.manifest import ModelManifest


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
    if "external_validation" in result:
        metrics["external_validation"] = result["external_validation"]
    updated = manifest.model_copy(update={"metrics": metrics})
    path = repository / manifest.name / "manifest.json"
    path.write_text(json.dumps(updated.model_dump(mode="json"), indent=2) + "\n")
    return updated
