"""Evaluate a model from the model repository, overall and per patient group and site.

The served artifact (``model.onnx``, checked against the manifest's sha256) is what is run,
through ONNX Runtime, on pixels prepared by the serving path's ``resize``/``normalise``; the
manifest's temperature and threshold turn logits into decisions. Metrics come from
scikit-learn, per group through fairlearn's ``MetricFrame``; 95% confidence intervals by a
percentile bootstrap within each group. Writes ``evaluation.json``, ``REPORT.md`` and plots.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort
import pandas as pd
from fairlearn.metrics import MetricFrame
from numpy.typing import NDArray
from sightline_common.manifest import ModelManifest, load_manifest, verify_artifact
from sklearn.metrics import roc_curve

from sightline.ml import data as ds
from sightline.ml.metrics import (
    METRICS,
    auprc,
    auroc,
    expected_calibration_error,
    metrics_table,
    sensitivity,
    specificity,
)
from sightline.ml.train import model_inputs, sigmoid

log = logging.getLogger(__name__)

ATTRIBUTES = ("sex", "age_band", "site")
# Largest between-group difference tolerated before a gap is flagged (the target for
# AUROC; the others are this project's review thresholds).
GAP_TOLERANCE = {"auroc": 0.05, "auprc": 0.10, "sensitivity": 0.10, "specificity": 0.10, "ece": 0.05}
# A group enters the gap of a metric only with enough cases for that metric to be stable.
MIN_POSITIVES = 50
MIN_NEGATIVES = 50


def metric_functions(threshold: float) -> dict[str, Callable[[Any, Any], float]]:
    """Metric name -> f(y_true, calibrated probability), for MetricFrame and the bootstrap."""

    def at_threshold(fn: Callable[[Any, Any], float], y: Any, p: Any) -> float:
        return fn(y, (np.asarray(p) >= threshold).astype(int))

    return {
        "auroc": auroc,
        "auprc": auprc,
        "sensitivity": partial(at_threshold, sensitivity),
        "specificity": partial(at_threshold, specificity),
        "ece": expected_calibration_error,
    }


def _count(y: Any, p: Any) -> float:
    return float(len(y))


def _positives(y: Any, p: Any) -> float:
    return float(np.sum(y))


def bootstrap_ci(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    fns: dict[str, Callable[[Any, Any], float]],
    n_bootstrap: int,
    rng: np.random.Generator,
) -> dict[str, list[float]]:
    """Percentile 95% interval of each metric over resamples of the cases (NaN draws dropped)."""
    draws: dict[str, list[float]] = {k: [] for k in fns}
    n = len(y)
    for _ in range(n_bootstrap if n else 0):
        idx = rng.integers(0, n, n)
        for name, fn in fns.items():
            draws[name].append(fn(y[idx], prob[idx]))
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[name] = (
            [float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))]
            if len(arr)
            else [float("nan")] * 2
        )
    return out


def _clean(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def evaluate_predictions(
    y: NDArray[np.int64],
    prob: NDArray[np.float64],
    threshold: float,
    groups: pd.DataFrame,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall and per-group metrics with 95% bootstrap CIs, and the largest gaps per attribute."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    fns = metric_functions(threshold)
    rng = np.random.default_rng(seed)
    overall_ci = bootstrap_ci(y, prob, fns, n_bootstrap, rng)
    overall = {
        "n": len(y),
        "positives": int(y.sum()),
        **{
            k: {"value": _clean(fn(y, prob)), "ci95": [_clean(v) for v in overall_ci[k]]}
            for k, fn in fns.items()
        },
    }
    by_attribute: dict[str, Any] = {}
    gaps: dict[str, Any] = {}
    for attribute in groups.columns:
        frame = MetricFrame(
            metrics={**fns, "n": _count, "positives": _positives},
            y_true=y,
            y_pred=prob,
            sensitive_features=groups[attribute].astype(str).to_numpy(),
        )
        table = frame.by_group
        per_group: dict[str, Any] = {}
        for group, row in table.iterrows():
            mask = groups[attribute].astype(str).to_numpy() == str(group)
            ci = bootstrap_ci(y[mask], prob[mask], fns, n_bootstrap, rng)
            per_group[str(group)] = {
                "n": int(row["n"]),
                "positives": int(row["positives"]),
                **{k: {"value": _clean(row[k]), "ci95": [_clean(v) for v in ci[k]]} for k in fns},
            }
        by_attribute[attribute] = per_group
        gaps[attribute] = _gaps(per_group)
    flagged = [
        {"attribute": a, "metric": m, **g}
        for a, per_metric in gaps.items()
        for m, g in per_metric.items()
        if g.get("flagged")
    ]
    flagged.sort(key=lambda g: -g["gap"] / GAP_TOLERANCE[g["metric"]])
    return {
        "threshold": threshold,
        "overall": overall,
        "by_attribute": by_attribute,
        "gaps": gaps,
        "flagged_gaps": flagged,
        "n_bootstrap": n_bootstrap,
        "gap_rules": {
            "tolerance": GAP_TOLERANCE,
            "min_positives": MIN_POSITIVES,
            "min_negatives": MIN_NEGATIVES,
            "note": "groups below the minimum counts are reported but left out of the gap of that metric",
        },
    }


def _eligible(group: dict[str, Any], metric: str) -> bool:
    pos, neg = group["positives"], group["n"] - group["positives"]
    if metric == "sensitivity":
        return bool(pos >= MIN_POSITIVES)
    if metric == "specificity":
        return bool(neg >= MIN_NEGATIVES)
    if metric == "ece":
        return bool(group["n"] >= MIN_POSITIVES + MIN_NEGATIVES)
    return bool(pos >= MIN_POSITIVES and neg >= MIN_NEGATIVES)


def _gaps(per_group: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        values = {
            g: v[metric]["value"]
            for g, v in per_group.items()
            if _eligible(v, metric) and v[metric]["value"] is not None and g != "unknown"
        }
        if len(values) < 2:
            out[metric] = {
                "gap": None,
                "groups": sorted(values),
                "flagged": False,
                "note": "fewer than two groups with enough cases",
            }
            continue
        best = max(values, key=lambda g: values[g])
        worst = min(values, key=lambda g: values[g])
        if metric == "ece":  # lower is better
            best, worst = worst, best
        gap = abs(values[best] - values[worst])
        out[metric] = {
            "gap": round(gap, 4),
            "best": best,
            "worst": worst,
            "groups": sorted(values),
            "tolerance": GAP_TOLERANCE[metric],
            "flagged": bool(gap > GAP_TOLERANCE[metric]),
        }
    return out


@dataclass
class Scored:
    """Model outputs on a set of images, with the rows they belong to."""

    meta: pd.DataFrame
    labels: NDArray[np.int64]
    logits: NDArray[np.float64]
    probs: NDArray[np.float64]


def onnx_session(repository: Path, manifest: ModelManifest, threads: int = 2) -> ort.InferenceSession:
    """ONNX Runtime session on the served artifact after checking its sha256 against the manifest."""
    path = verify_artifact(repository, manifest, "1/model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def score(repository: Path, manifest: ModelManifest, data: ds.DermSet, batch: int = 128) -> Scored:
    session = onnx_session(repository, manifest)
    inputs = model_inputs(data.images, manifest.preprocessing)
    name_in = session.get_inputs()[0].name
    logits = (
        np.concatenate(
            [
                session.run(None, {name_in: inputs[i : i + batch]})[0][:, 0]
                for i in range(0, len(inputs), batch)
            ]
        ).astype(np.float64)
        if len(inputs)
        else np.zeros(0)
    )
    return Scored(data.meta, data.labels, logits, sigmoid(logits / manifest.temperature))


def _plot_roc(
    path: Path, title: str, curves: list[tuple[str, NDArray[np.int64], NDArray[np.float64]]]
) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, y, p in curves:
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auroc(y, p):.3f}, n={len(y)}, pos={int(y.sum())})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_reliability(
    path: Path, title: str, series: list[tuple[str, NDArray[np.int64], NDArray[np.float64]]]
) -> None:
    from sklearn.calibration import calibration_curve

    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfect calibration")
    for label, y, p in series:
        frac, mean = calibration_curve(y, p, n_bins=15, strategy="uniform")
        ax.plot(mean, frac, marker="o", ms=3, label=f"{label} (ECE {expected_calibration_error(y, p):.3f})")
        hx.hist(p, bins=30, range=(0, 1), histtype="step", label=label)
    ax.set(ylabel="observed malignant fraction", title=title, ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    hx.set(xlabel="predicted probability of malignancy", ylabel="images", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary(
    y: NDArray[np.int64], p: NDArray[np.float64], threshold: float, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    fns = metric_functions(threshold)
    ci = bootstrap_ci(y, p, fns, n_bootstrap, np.random.default_rng(seed))
    return {
        "n": len(y),
        "positives": int(y.sum()),
        **{k: {"value": _clean(fn(y, p)), "ci95": [_clean(v) for v in ci[k]]} for k, fn in fns.items()},
    }


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
        "held_out_site_all_splits": _summary(s_held.labels, s_held.probs, manifest.threshold, n_bootstrap, 1),
        f"other_sites_{split}": _summary(s_others.labels, s_others.probs, manifest.threshold, n_bootstrap, 2),
        f"reference_model_on_{site}_{split}": _summary(
            main.labels[in_dist], main.probs[in_dist], main_threshold, n_bootstrap, 3
        ),
    }
    _plot_roc(
        out / f"roc_loso_{site}.png",
        f"Leave-one-site-out: {site}",
        [
            (f"trained without {site}: {site} (all splits)", s_held.labels, s_held.probs),
            (f"trained without {site}: other sites ({split})", s_others.labels, s_others.probs),
            (f"reference model: {site} ({split})", main.labels[in_dist], main.probs[in_dist]),
        ],
    )
    _plot_reliability(
        out / f"calibration_loso_{site}.png",
        f"Calibration, trained without {site}",
        [
            (f"{site} (external)", s_held.labels, s_held.probs),
            (f"other sites ({split})", s_others.labels, s_others.probs),
        ],
    )
    return result


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
    subset = ds.select(everything, [split])
    scored = score(repository, manifest, subset)
    groups = scored.meta[list(ATTRIBUTES)].astype(str)
    result = evaluate_predictions(
        scored.labels, scored.probs, manifest.threshold, groups, n_bootstrap=n_bootstrap
    )
    result["uncalibrated_ece"] = _clean(expected_calibration_error(scored.labels, sigmoid(scored.logits)))
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
    for attribute in ATTRIBUTES:
        curves = [("all", scored.labels, scored.probs)]
        for group in sorted(groups[attribute].unique()):
            mask = groups[attribute].to_numpy() == group
            curves.append((f"{attribute}={group}", scored.labels[mask], scored.probs[mask]))
        _plot_roc(out / f"roc_{attribute}.png", f"ROC by {attribute} ({split})", curves)
    _plot_reliability(
        out / "calibration.png",
        f"Reliability ({split})",
        [
            ("T = 1 (prior-corrected logit)", scored.labels, sigmoid(scored.logits)),
            (f"after (T={manifest.temperature:.2f})", scored.labels, scored.probs),
        ],
    )
    _plot_reliability(
        out / "calibration_site.png",
        f"Reliability by site ({split})",
        [
            (site, scored.labels[m], scored.probs[m])
            for site in sorted(groups["site"].unique())
            if (m := groups["site"].to_numpy() == site).sum() > 0
        ],
    )
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
        _update_manifest(repository, manifest, result)
    log.info("evaluated %s on %d images", name, len(scored.labels))
    return result


def _update_manifest(repository: Path, manifest: ModelManifest, result: dict[str, Any]) -> None:
    """Record the evaluation summary in manifest.json (not an artifact: digests are unaffected)."""
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


def render_report(result: dict[str, Any]) -> str:
    """A readable markdown report of an evaluation result."""
    lines = [
        f"# Evaluation of {result['model']} v{result['version']} on the {result['split']} split",
        "",
        f"Calibrated probability = sigmoid(logit / {result['temperature']:.3f}); operating threshold "
        f"{result['threshold']:.4f} (chosen on validation). 95% CIs: percentile bootstrap, "
        f"{result['n_bootstrap']} resamples within each group. ECE: 15 equal-width bins "
        f"(at T = 1, after removing the class-weight prior: {result['uncalibrated_ece']}).",
        "",
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
