"""The markdown report of an evaluation (REPORT.md beside its plots)."""

from __future__ import annotations

from typing import Any

from sightline.ml.loso_results import LOSO_MIN_POSITIVES, loso_entries
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
    negative, positive = result.get("labels", ["benign", "malignant"])
    lines = [
        f"# {_title(result)}",
        "",
        f"Calibrated probability = sigmoid(logit / {result['temperature']:.3f}); operating threshold "
        f"{result['threshold']:.4f} (chosen on validation). 95% CIs: percentile bootstrap, "
        f"{result['n_bootstrap']} resamples of {unit}s within each group; no CI where a group has fewer "
        f"than {result.get('min_positives_ci', 0)} {positive} (or, for specificity, {negative}) cases. "
        "ECE: 15 equal-width bins "
        f"(at T = 1, after removing the class-weight prior: {result['uncalibrated_ece']}).",
        "",
    ]
    if result.get("ci_withheld"):
        lines += [
            "Groups too small for a confidence interval (**read their figures as anecdotes**): "
            + ", ".join(
                f"{w['attribute']}={w['group']} ({w['positives']} {positive})" for w in result["ci_withheld"]
            )
            + ".",
            "",
        ]
    lines += _loso_headline(result)
    lines += [
        "## Overall",
        "",
        metrics_table({"all": result["overall"]}, positive),
        *([] if result["by_attribute"] else ["![ROC](roc.png)"]),
        "![calibration](calibration.png)",
        "",
    ]
    if not result["by_attribute"]:
        lines += [
            "No subgroup columns (sex, age, site) exist for this dataset: results cannot be "
            "disaggregated, and no subgroup performance is implied.",
            "",
        ]
    for attribute, per in result["by_attribute"].items():
        lines += [
            f"## By {attribute}",
            "",
            metrics_table(per, positive),
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
            f"Largest gaps by {attribute} (groups with >= {MIN_POSITIVES} {positive} and "
            f">= {MIN_NEGATIVES} {negative} for AUROC/AUPRC; 'unknown' excluded):",
            "",
            *gap_lines,
            "",
        ]
    if "site" in result["by_attribute"]:
        lines += ["![calibration by site](calibration_site.png)", ""]
    lines += ["## Flagged gaps", ""]
    lines += [
        f"- {f['attribute']} / {f['metric']}: {f['gap']:.3f} ({f['best']} vs {f['worst']}; tolerance "
        f"{f['tolerance']})"
        for f in result["flagged_gaps"]
    ] or ["None above tolerance."]
    oos = result.get("out_of_scope")
    if oos is not None and oos.get("flagged") is not None:
        lines += [
            "",
            "## Out-of-scope flag",
            "",
            f"{oos['flagged']:.1%} of these {oos['n']} images are flagged out of scope by the served model "
            f"(score above {oos['threshold']}; about 1% expected on images like the training data). By site: "
            + ", ".join(f"{site} {rate:.1%}" for site, rate in oos["by_site"].items())
            + ".",
        ]
    for entry in loso_entries(result):
        lines += _loso_details(entry, result["split"])
    return "\n".join(lines) + "\n"


def _auroc(m: dict[str, Any]) -> str:
    v, (lo, hi) = m["auroc"]["value"], m["auroc"]["ci95"]
    if v is None:
        return "n/a"
    return f"{v:.3f} ({lo:.3f}-{hi:.3f})" if lo is not None else f"{v:.3f} (no CI)"


def _loso_headline(result: dict[str, Any]) -> list[str]:
    """The report's first section: how the recipe does at a site it never saw, worst site first."""
    section = result.get("leave_one_site_out")
    entries = loso_entries(result)
    if section is None and not entries:
        return []
    minimum = (section or {}).get("min_positives", LOSO_MIN_POSITIVES)
    split = result["split"]
    lines = [
        f"## Headline: leave-one-site-out (every site with >= {minimum} malignant images)",
        "",
        "Each model is trained by the same recipe without one site (threshold chosen on the other sites' "
        "validation split) and tested on every image of that site, an unseen site; pooled figures below "
        "are lifted by the site shortcut, these are not.",
        "",
    ]
    if entries:
        ordered = sorted(entries, key=lambda e: e["held_out_site_all_splits"]["auroc"]["value"] or 0.0)
        lines += [
            "| held-out site | n | malignant | AUROC | sensitivity | specificity | ECE | AUROC, other sites "
            f"({split}) | reference model on the site ({split}) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for e in ordered:
            held = e["held_out_site_all_splits"]
            others = next((v for k, v in e.items() if k.startswith("other_sites_")), None)
            ref = next((v for k, v in e.items() if k.startswith("reference_model_on_")), None)
            lines.append(
                f"| {e['held_out_site']} | {held['n']} | {held['positives']} | {_auroc(held)} | "
                + " | ".join(
                    f"{held[m]['value']:.3f}" if held[m]["value"] is not None else "n/a"
                    for m in ("sensitivity", "specificity", "ece")
                )
                + f" | {_auroc(others) if others else 'n/a'} | {_auroc(ref) if ref else 'n/a'} |"
            )
        worst = ordered[0]
        lines += [
            "",
            f"Worst held-out site: **{worst['held_out_site']}** (AUROC "
            f"{_auroc(worst['held_out_site_all_splits'])}, sensitivity "
            f"{worst['held_out_site_all_splits']['sensitivity']['value']} at its threshold).",
            "",
        ]
    missing = (section or {}).get("missing", [])
    if missing:
        listed = ", ".join(f"{m['site']} (`{m['model']}`)" for m in missing)
        lines += [
            f"**Not evaluated, no held-out model found:** {listed}. Train each with the recipe's config and "
            "`exclude_sites: [<site>]`, then pass its repository with `--loso-repository`.",
            "",
        ]
    return lines


def _loso_details(ext: dict[str, Any], split: str) -> list[str]:
    site = ext["held_out_site"]
    rows = {k: v for k, v in ext.items() if isinstance(v, dict) and "auroc" in v}
    return [
        "",
        f"## External validation: leave {site} out",
        "",
        f"A model trained with the same recipe without any {site} image (threshold "
        f"{ext['threshold']:.4f} chosen on the other sites' validation split), tested on every {site} "
        f"image, against the other sites' {split} split and the reference model on "
        f"{site}'s {split} split.",
        "",
        metrics_table(rows),
        f"![ROC leave-one-site-out](roc_loso_{site}.png)",
        "",
        f"![calibration leave-one-site-out](calibration_loso_{site}.png)",
        "",
    ]
