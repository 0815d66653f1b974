"""The markdown report of an evaluation (REPORT.md beside its plots)."""

from __future__ import annotations

from typing import Any

from sightline.ml.metrics import metrics_table
from sightline.ml.subgroups import MIN_NEGATIVES, MIN_POSITIVES


def _title(result: dict[str, Any]) -> str:
    model = f"{result['model']} v{result['version']}"
    split = result["split"]
    what = "all images" if split == "all" else f"the {split} split"
    what = f"{what} of {result.get('dataset', 'the dataset')}"
    if result.get("external"):
        return f"External validation of {model} on {result['external']} ({what})"
    return f"Evaluation of {model} on {what}"


def render_report(result: dict[str, Any]) -> str:
    """A readable markdown report of an evaluation result."""
    unit = result.get("bootstrap_unit", "image")
    lines = [
        f"# {_title(result)}",
        "",
        f"Calibrated probability = sigmoid(logit / {result['temperature']:.3f}); operating threshold "
        f"{result['threshold']:.4f} (chosen on validation). 95% CIs: percentile bootstrap, "
        f"{result['n_bootstrap']} resamples of {unit}s within each group; no CI where a group has fewer "
        f"than {result.get('min_positives_ci', 0)} malignant (or, for specificity, benign) cases. "
        "ECE: 15 equal-width bins "
        f"(at T = 1, after removing the class-weight prior: {result['uncalibrated_ece']}).",
        "",
    ]
    if result.get("ci_withheld"):
        lines += [
            "Groups too small for a confidence interval (**read their figures as anecdotes**): "
            + ", ".join(
                f"{w['attribute']}={w['group']} ({w['positives']} malignant)" for w in result["ci_withheld"]
            )
            + ".",
            "",
        ]
    lines += [
        "## Overall",
        "",
        metrics_table({"all": result["overall"]}),
        "![calibration](calibration.png)",
        "",
    ]
    for attribute, per in result["by_attribute"].items():
        lines += [
            f"## By {attribute}",
            "",
            metrics_table(per),
            f"![ROC by {attribute}](roc_{attribute}.png)",
            "",
        ]
        gap_lines = [
            f"- {m}: gap {g['gap']:.3f} ({g['best']} vs {g['worst']}){' **FLAGGED**' if g['flagged'] else ''}"
            if g["gap"] is not None
            else f"- {m}: {g['note']}"
            for m, g in result["gaps"][attribute].items()
        ]
        lines += [
            f"Largest gaps by {attribute} (groups with >= {MIN_POSITIVES} malignant and "
            f">= {MIN_NEGATIVES} benign for AUROC/AUPRC; 'unknown' excluded):",
            "",
            *gap_lines,
            "",
        ]
    lines += ["![calibration by site](calibration_site.png)", "", "## Flagged gaps", ""]
    lines += [
        f"- {f['attribute']} / {f['metric']}: {f['gap']:.3f} ({f['best']} vs {f['worst']}; tolerance "
        f"{f['tolerance']})"
        for f in result["flagged_gaps"]
    ] or ["None above tolerance."]
    ext = result.get("external_validation")
    if ext:
        site = ext["held_out_site"]
        rows = {k: v for k, v in ext.items() if isinstance(v, dict) and "auroc" in v}
        lines += [
            "",
            f"## External validation: leave {site} out",
            "",
            f"A model trained with the same recipe without any {site} image (threshold "
            f"{ext['threshold']:.4f} chosen on the other sites' validation split), tested on every {site} "
            "image, against the other sites' test split and the reference model on "
            f"{site}'s test split.",
            "",
            metrics_table(rows),
            f"![ROC leave-one-site-out](roc_loso_{site}.png)",
            "",
            f"![calibration leave-one-site-out](calibration_loso_{site}.png)",
            "",
        ]
    return "\n".join(lines) + "\n"
