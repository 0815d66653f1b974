"""Leave-one-site-out: a model trained without a site, tested on that site as external data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sightline_common.manifest import load_manifest

from sightline.ml import data as ds
from sightline.ml.inference import Scored, score
from sightline.ml.plots import plot_reliability, plot_roc
from sightline.ml.subgroups import summary


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
) -> dict[str, Any]:
    """A model trained without ``site``: tested on all that site's images and the other sites' split."""
    manifest = load_manifest(loso_repository, loso_model)
    held_out = ds.select(everything, sorted(set(everything.meta["split"])), include_sites=[site])
    others = ds.select(everything, [split], exclude_sites=[site])
    s_held, s_others = score(loso_repository, manifest, held_out), score(loso_repository, manifest, others)
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
