"""Evaluate a model from the model repository on any folder of images, overall and per group and site.

The served artifact (the manifest version's ``model.onnx``, checked against the manifest's
sha256) is what is run, through ONNX Runtime, on pixels prepared by the serving path's
``resize``/``normalise``; the manifest's temperature and threshold turn logits into decisions.
Metrics come from scikit-learn, per group through fairlearn's ``MetricFrame``; 95% confidence
intervals by a lesion-level percentile bootstrap within each group. Writes ``evaluation.json``,
``REPORT.md`` and plots into a new folder; the served model's manifest, evaluation folder and
model card change only when asked (``update_manifest``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sightline_common.errors import InvalidInput, NotFound
from sightline_common.manifest import ModelManifest, load_manifest

from sightline.ml import data as ds
from sightline.ml.inference import Scored, score
from sightline.ml.loso import leave_one_site_out
from sightline.ml.loso_results import LOSO_MIN_POSITIVES
from sightline.ml.manifest_update import publish
from sightline.ml.metrics import expected_calibration_error
from sightline.ml.plots import Series, plot_reliability, plot_roc
from sightline.ml.prediction import sigmoid
from sightline.ml.progress import Silent, Tracker
from sightline.ml.report import render_report
from sightline.ml.statistics import clean
from sightline.ml.subgroups import ATTRIBUTES, MIN_POSITIVES_CI, evaluate_predictions

log = logging.getLogger(__name__)
EVALUATIONS_DIR = Path("var/evaluations")


def find_manifest(repository: Path, name: str) -> ModelManifest:
    """The model's manifest, or an error that says where it looked and what is there."""
    path = repository / name / "manifest.json"
    if not path.is_file():
        present = sorted(p.parent.name for p in repository.glob("*/manifest.json"))
        raise NotFound(
            f"no manifest for model {name!r}: looked for {path.resolve()}"
            + (f"; models with a manifest there: {', '.join(present)}" if present else "")
        )
    return load_manifest(repository, name)


def choose_rows(
    everything: ds.DermSet, split: str | None, all_images: bool, source: str
) -> tuple[ds.DermSet, str]:
    """The images to evaluate and the name the report gives them.

    ``all_images``: every row. A split: its rows, refused when empty. Neither: ``test`` when the
    metadata has it, every row when it has no split column.
    """
    present = sorted(set(everything.meta["split"].astype(str)))
    if all_images:
        chosen, label = everything, ds.ALL
    elif split is None and present == [ds.ALL]:
        chosen, label = everything, ds.ALL
    else:
        label = split or "test"
        chosen = ds.select(everything, [label])
        if len(chosen) == 0:
            raise InvalidInput(
                f"split {label!r} has no images in {source}; splits present: {', '.join(present)} "
                "(choose one with --split, or --all for every image)"
            )
    if len(chosen) == 0:
        raise InvalidInput(f"no images to evaluate in {source}")
    return chosen, label


def default_out(manifest: ModelManifest, dataset: Path, label: str, external: str | None) -> Path:
    """A new folder per run: var/evaluations/<model>-v<version>-<dataset>-<split>-<UTC time>."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    what = external or f"{dataset.resolve().name}-{label}"
    return EVALUATIONS_DIR / f"{manifest.name}-v{manifest.version}-{what}-{stamp}"


def subgroup_columns(manifest: ModelManifest) -> list[str]:
    """The attributes results are disaggregated by: the training config's (none for a dataset
    without them), else the dermoscopy model's sex, age band and site."""
    configured = manifest.training_data.get("config", {}).get("subgroup_columns")
    return list(ATTRIBUTES) if configured is None else [str(c) for c in configured]


def group_column(manifest: ModelManifest) -> str:
    """The metadata column grouping images of one lesion or patient (bootstrap unit, split check)."""
    return str(manifest.training_data.get("group_column", "lesion_id"))


def _plot_evaluation(
    scored: Scored, manifest: ModelManifest, attributes: Sequence[str], split: str, out: Path
) -> None:
    """ROC overall or per attribute, reliability overall and (with a site column) per site."""
    temperature, positive = manifest.temperature, manifest.positive_label
    groups = scored.meta[list(attributes)].astype(str)
    if not attributes:
        plot_roc(out / "roc.png", f"ROC ({split})", [("all", scored.labels, scored.probs)])
    for attribute in attributes:
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
        positive=positive,
    )
    if "site" not in attributes:
        return
    plot_reliability(
        out / "calibration_site.png",
        f"Reliability by site ({split})",
        [
            (site, scored.labels[m], scored.probs[m])
            for site in sorted(groups["site"].unique())
            if (m := groups["site"].to_numpy() == site).sum() > 0
        ],
    )


def out_of_scope_rates(scored: Scored, threshold: float) -> dict[str, Any]:
    """Share of the evaluated images the served model flags out of scope, overall and per site.

    On data like the training data about 1% is expected (the threshold is the validation 0.99
    quantile); much more says the model is being evaluated, or would be used, outside its scope.
    """
    assert scored.out_of_scope is not None
    flagged = scored.out_of_scope > threshold
    sites = scored.meta["site"].astype(str).to_numpy()
    return {
        "threshold": threshold,
        "n": len(flagged),
        "flagged": round(float(flagged.mean()), 4) if len(flagged) else None,
        "by_site": {str(site): round(float(flagged[sites == site].mean()), 4) for site in sorted(set(sites))},
    }


def run_evaluation(
    repository: Path,
    name: str,
    *,
    dataset: str | Path | None = None,
    metadata: str = "metadata.csv",
    split: str | None = None,
    all_images: bool = False,
    external: str | None = None,
    out: Path | None = None,
    loso_repositories: Sequence[Path] = (),
    loso_sites: Sequence[str] | None = None,
    loso_min_positives: int = LOSO_MIN_POSITIVES,
    n_bootstrap: int = 1000,
    by_lesion: bool = True,
    min_positives_ci: int = MIN_POSITIVES_CI,
    cache_dir: Path | None = Path(".cache"),
    update_manifest: bool = False,
    limit_per_split: int | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """Evaluate ``name`` on a split (or every image) of a folder; write the report into ``out``.

    Leave-one-site-out (not for an external set) covers every site with at least
    ``loso_min_positives`` malignant images, each by ``<name>-loso-<site>`` found in one of
    ``loso_repositories``; sites without one are listed as missing.
    ``out`` defaults to a new folder under var/evaluations. ``update_manifest`` instead writes
    into the served model's evaluation folder and updates its manifest metrics and model card.
    """
    tracker = tracker or Silent()
    manifest = find_manifest(repository, name)
    served_eval = repository / name / "evaluation"
    if update_manifest and external:
        raise InvalidInput("--update-manifest records the model's own test results; an --external run cannot")
    if update_manifest and out is not None and out.resolve() != served_eval.resolve():
        raise InvalidInput(f"--update-manifest writes into {served_eval}; leave --out unset")
    root = ds.dataset_root(dataset)
    attributes = subgroup_columns(manifest)
    grouping = group_column(manifest)
    meta = ds.read_metadata(root, required=ds.EVALUATION_COLUMNS, metadata=metadata, group_column=grouping)
    everything = ds.load_dataset(
        root,
        manifest.preprocessing,
        cache_dir=cache_dir,
        limit=limit_per_split,
        required=ds.EVALUATION_COLUMNS,
        metadata=metadata,
        advance=tracker.task("decoding images", len(meta) if limit_per_split is None else 0),
        group_column=grouping,
    )
    chosen, label = choose_rows(everything, split, all_images, str(root / metadata))
    scored = score(repository, manifest, chosen, advance=tracker.task("inference", len(chosen)))
    groups = scored.meta[attributes].astype(str)
    result = evaluate_predictions(
        scored.labels,
        scored.probs,
        manifest.threshold,
        groups,
        n_bootstrap=n_bootstrap,
        clusters=scored.meta["lesion_id"].to_numpy() if by_lesion else None,
        min_positives_ci=min_positives_ci,
        tracker=tracker,
        cluster_unit=grouping.removesuffix("_id"),
    )
    result["uncalibrated_ece"] = clean(expected_calibration_error(scored.labels, sigmoid(scored.logits)))
    result.update(
        {
            "model": name,
            "version": manifest.version,
            "split": label,
            "temperature": manifest.temperature,
            "dataset": str(root.resolve().name),
            "placeholder": manifest.placeholder,
            "labels": manifest.labels,
            "positive_label": manifest.positive_label,
            "group_column": grouping,
            "subgroup_columns": attributes,
        }
    )
    if external:
        result["external"] = external
    if manifest.out_of_scope is not None and scored.out_of_scope is not None:
        result["out_of_scope"] = out_of_scope_rates(scored, manifest.out_of_scope.threshold)
    out = served_eval if update_manifest else (out or default_out(manifest, root, label, external))
    out.mkdir(parents=True, exist_ok=True)
    _plot_evaluation(scored, manifest, attributes, label, out)
    if not external and "site" in attributes:
        result["leave_one_site_out"] = leave_one_site_out(
            list(loso_repositories),
            name,
            everything,
            scored,
            manifest.threshold,
            label,
            out,
            n_bootstrap,
            by_lesion=by_lesion,
            min_positives=loso_min_positives,
            sites=None if loso_sites is None else list(loso_sites),
            tracker=tracker,
        )
    if update_manifest:
        publish(repository, manifest, result, out)
    else:
        (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "REPORT.md").write_text(render_report(result))
    result["out"] = str(out)
    log.info("evaluated %s on %d images", name, len(scored.labels))
    return result
