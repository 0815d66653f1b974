"""Leave-one-site-out: models trained without a site, tested on that site as external data.

Every site with enough malignant cases gets one (``<model>-loso-<site>``, trained by the same
recipe with ``exclude_sites: [<site>]``); the worst held-out site is the headline of the report,
because a recipe that loses its sensitivity at an unseen site must not do so silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sightline_common.manifest import load_manifest

from sightline.ml import data as ds
from sightline.ml.inference import Scored, score
from sightline.ml.loso_results import LOSO_MIN_POSITIVES, loso_sites
from sightline.ml.plots import plot_reliability, plot_roc
from sightline.ml.progress import Silent, Tracker
from sightline.ml.subgroups import summary


def loso_model_name(model: str, site: str) -> str:
    return f"{model}-loso-{site}"


def leave_one_site_out(
    repositories: list[Path],
    model: str,
    everything: ds.DermSet,
    main: Scored,
    main_threshold: float,
    split: str,
    out: Path,
    n_bootstrap: int,
    *,
    by_lesion: bool = True,
    min_positives: int = LOSO_MIN_POSITIVES,
    sites: list[str] | None = None,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """Each eligible site's held-out model tested on it; sites without a model are listed as missing."""
    eligible = sites or loso_sites(everything.meta, min_positives)
    results, missing = [], []
    for site in eligible:
        name = loso_model_name(model, site)
        repository = next((r for r in repositories if (r / name / "manifest.json").is_file()), None)
        if repository is None:
            missing.append({"site": site, "model": name})
            continue
        results.append(
            external_validation(
                repository,
                name,
                site,
                everything,
                main,
                main_threshold,
                split,
                out,
                n_bootstrap,
                by_lesion=by_lesion,
                tracker=tracker,
            )
        )
    held = {
        r["held_out_site"]: r["held_out_site_all_splits"]["auroc"]["value"]
        for r in results
        if r["held_out_site_all_splits"]["auroc"]["value"] is not None
    }
    return {
        "min_positives": min_positives,
        "sites": eligible,
        "results": results,
        "missing": missing,
        "worst_site": min(held, key=lambda s: held[s]) if held else None,
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
    *,
    by_lesion: bool = True,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """A model trained without ``site``: tested on all that site's images and the other sites' split."""
    manifest = load_manifest(loso_repository, loso_model)
    held_out = ds.select(everything, sorted(set(everything.meta["split"])), include_sites=[site])
    others = ds.select(everything, [split], exclude_sites=[site])
    advance = (tracker or Silent()).task(f"leave {site} out: inference", len(held_out) + len(others))
    s_held = score(loso_repository, manifest, held_out, advance=advance)
    s_others = score(loso_repository, manifest, others, advance=advance)
    in_dist = main.meta["site"].to_numpy() == site

    def lesions(scored: Scored) -> Any:
        return scored.meta["lesion_id"].to_numpy() if by_lesion else None

    result = {
        "held_out_site": site,
        "model": loso_model,
        "training_sites": manifest.training_data.get("train_by_site", {}),
        "epochs_run": manifest.metrics.get("validation", {}).get("epochs_run"),
        "threshold": manifest.threshold,
        "held_out_site_all_splits": summary(
            s_held.labels, s_held.probs, manifest.threshold, n_bootstrap, 1, clusters=lesions(s_held)
        ),
        f"other_sites_{split}": summary(
            s_others.labels, s_others.probs, manifest.threshold, n_bootstrap, 2, clusters=lesions(s_others)
        ),
        f"reference_model_on_{site}_{split}": summary(
            main.labels[in_dist],
            main.probs[in_dist],
            main_threshold,
            n_bootstrap,
            3,
            clusters=None if not by_lesion else lesions(main)[in_dist],
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
