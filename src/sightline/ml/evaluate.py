"""Evaluate a model from the model repository, overall and per patient group and site.

The served artifact (the manifest version's ``model.onnx``, checked against the manifest's
sha256) is what is run, through ONNX Runtime, on pixels prepared by the serving path's
``resize``/``normalise``; the manifest's temperature and threshold turn logits into decisions.
Metrics come from scikit-learn, per group through fairlearn's ``MetricFrame``; 95% confidence
intervals by a percentile bootstrap within each group. Writes ``evaluation.json``,
``REPORT.md`` and plots.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sightline_common.manifest import load_manifest

from sightline.ml import data as ds
from sightline.ml.inference import Scored, score
from sightline.ml.manifest_update import record_evaluation
from sightline.ml.metrics import expected_calibration_error
from sightline.ml.plots import Series, plot_reliability, plot_roc
from sightline.ml.prediction import sigmoid
from sightline.ml.report import render_report
from sightline.ml.statistics import clean
from sightline.ml.subgroups import ATTRIBUTES, evaluate_predictions, summary

log = logging.getLogger(__name__)


def external_validation(
    loso_repository: Path,
    loso_model: str,
    site: str,
    everything: ds.DermSet,
    main: Scored,
    main_threshold: float,
    split: str,
    out: Path,
    n_bootstrap: int,
) -> dict[str, Any]:
    """A model trained without ``site``: tested on all that site's images and the other sites' split."""
    manifest = load_manifest(loso_repository, loso_model)
    held_out = ds.select(everything, ds.SPLITS, include_sites=[site])
    others = ds.select(everything, [split], exclude_sites=[site])
    s_held, s_others = score(loso_repository, manifest, held_out), score(loso_repository, manifest, others)
    in_dist = main.meta["site"].to_numpy() == site
    result = {
        "held_out_site": site,
        "model": loso_model,
        "training_sites": manifest.training_data.get("train_by_site", {}),
        "epochs_run": manifest.metrics.get("validation", {}).get("epochs_run"),
        "threshold": manifest.threshold,
        "held_out_site_all_splits": summary(s_held.labels, s_held.probs, manifest.threshold, n_bootstrap, 1),
        f"other_sites_{split}": summary(s_others.labels, s_others.probs, manifest.threshold, n_bootstrap, 2),
        f"reference_model_on_{site}_{split}": summary(
            main.labels[in_dist], main.probs[in_dist], main_threshold, n_bootstrap, 3
        ),
    }
    plot_roc(
        out / f"roc_loso_{site}.png",
        f"Leave-one-site-out: {site}",
        [
            (f"trained without {site}: {site} (all splits)", s_held.labels, s_held.probs),
            (f"trained without {site}: other sites ({split})", s_others.labels, s_others.probs),
            (f"reference model: {site} ({split})", main.labels[in_dist], main.probs[in_dist]),
        ],
    )
    plot_reliability(
        out / f"calibration_loso_{site}.png",
        f"Calibration, trained without {site}",
        [
            (f"{site} (external)", s_held.labels, s_held.probs),
            (f"other sites ({split})", s_others.labels, s_others.probs),
        ],
    )
    return result


def _plot_evaluation(scored: Scored, temperature: float, split: str, out: Path) -> None:
    """ROC per attribute and reliability overall and per site."""
    groups = scored.meta[list(ATTRIBUTES)].astype(str)
    for attribute in ATTRIBUTES:
        curves: list[Series] = [("all", scored.labels, scored.probs)]
        for group in sorted(groups[attribute].unique()):
            mask = groups[attribute].to_numpy() == group
            curves.append((f"{attribute}={group}", scored.labels[mask], scored.probs[mask]))
        plot_roc(out / f"roc_{attribute}.png", f"ROC by {attribute} ({split})", curves)
    plot_reliability(
        out / "calibration.png",
        f"Reliability ({split})",
        [
            ("T = 1 (prior-corrected logit)", scored.labels, sigmoid(scored.logits)),
            (f"after (T={temperature:.2f})", scored.labels, scored.probs),
        ],
    )
    plot_reliability(
        out / "calibration_site.png",
        f"Reliability by site ({split})",
        [
            (site, scored.labels[m], scored.probs[m])
            for site in sorted(groups["site"].unique())
            if (m := groups["site"].to_numpy() == site).sum() > 0
        ],
    )


def run_evaluation(
    repository: Path,
    name: str,
    *,
    dataset: str | Path | None = None,
    split: str = "test",
    out: Path | None = None,
    loso_repository: Path | None = None,
    loso_model: str = "derm-cnn-loso-rosendahl",
    loso_site: str = "rosendahl",
    n_bootstrap: int = 1000,
    cache_dir: Path | None = Path(".cache"),
    update_manifest: bool = True,
    limit_per_split: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``name`` on ``split``; write evaluation.json, REPORT.md and plots into ``out``."""
    manifest = load_manifest(repository, name)
    out = out or repository / name / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    root = ds.dataset_root(dataset)
    everything = ds.load_dataset(root, manifest.preprocessing, cache_dir=cache_dir, limit=limit_per_split)
    scored = score(repository, manifest, ds.select(everything, [split]))
    groups = scored.meta[list(ATTRIBUTES)].astype(str)
    result = evaluate_predictions(
        scored.labels, scored.probs, manifest.threshold, groups, n_bootstrap=n_bootstrap
    )
    result["uncalibrated_ece"] = clean(expected_calibration_error(scored.labels, sigmoid(scored.logits)))
    result.update(
        {
            "model": name,
            "version": manifest.version,
            "split": split,
            "temperature": manifest.temperature,
            "dataset": str(root.name),
            "placeholder": manifest.placeholder,
        }
    )
    _plot_evaluation(scored, manifest.temperature, split, out)
    if loso_repository is not None:
        result["external_validation"] = external_validation(
            loso_repository,
            loso_model,
            loso_site,
            everything,
            scored,
            manifest.threshold,
            split,
            out,
            n_bootstrap,
        )
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "REPORT.md").write_text(render_report(result))
    if update_manifest:
        record_evaluation(repository, manifest, result)
    log.info("evaluated %s on %d images", name, len(scored.labels))
    return result
