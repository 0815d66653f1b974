"""Do the drift monitor and the out-of-scope flag fire on a site the model never saw?

A leave-one-site-out model (trained with ``exclude_sites: [SITE]``, its out-of-scope score fitted
with ``sightline fit-out-of-scope`` on the same training split) scores every image of the held-out
site and, for comparison, the test split of the sites it was trained on. Both streams go, in a
random order, through the gateway's :class:`~sightline_common.drift.DriftMonitor` (the gateway's
window and minimum: 500 and 100), the held-out site as its own segment, as a clinic would. Prints
the flag rate and the out-of-scope AUROC (held-out site vs held-in test), the PSI per feature and
the out-of-scope share of each segment after one window, and after how many held-out studies
the first PSI above 0.2 appeared (``SightlineInputDrift`` / ``SightlineOutOfScopeShare`` read
these gauges). Scores come from the served ONNX graph of the leave-one-site-out model.

    .venv/bin/python -m benchmarks.bench_held_out_site --repository .cache/runs/loso-rosendahl/repository \\
        --model derm-cnn-loso-rosendahl --site rosendahl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sightline_common.drift import DEFAULT_MIN_COUNT, DEFAULT_PSI_THRESHOLD, DEFAULT_WINDOW, DriftMonitor
from sightline_common.manifest import load_manifest
from sklearn.metrics import roc_auc_score

from benchmarks.bench_out_of_scope import served_outputs
from sightline.ml import data as ds
from sightline.ml.prediction import sigmoid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--site", default="rosendahl")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    manifest = load_manifest(args.repository, args.model)
    oos = manifest.out_of_scope
    if oos is None:
        raise SystemExit(f"{args.model} has no out-of-scope score: run `sightline fit-out-of-scope` first")
    excluded = manifest.training_data.get("excluded_sites", [])
    if args.site not in excluded:
        raise SystemExit(f"{args.model} was trained on {args.site}: it is not held out")
    data = ds.load_dataset(
        ds.dataset_root(None), manifest.preprocessing, cache_dir=args.cache_dir, required=ds.REQUIRED_COLUMNS
    )
    held_out = data.subset((data.meta["site"] == args.site).to_numpy())
    held_in = ds.select(data, ["test"], exclude_sites=excluded)
    z_out, s_out = served_outputs(args.repository, manifest, held_out.images)
    z_in, s_in = served_outputs(args.repository, manifest, held_in.images)
    t = oos.threshold
    auc = roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out])
    print(f"{args.model} v{manifest.version}, out-of-scope threshold {t}")
    print(f"held-in test split ({len(s_in)} images): flagged {(s_in > t).mean():.3f}")
    print(f"held-out site {args.site} ({len(s_out)} images): flagged {(s_out > t).mean():.3f}")
    print(f"out-of-scope AUROC, held-out site vs held-in test: {auc:.4f}")

    monitor = DriftMonitor(window=DEFAULT_WINDOW, min_count=DEFAULT_MIN_COUNT, every=1)
    monitor.register(manifest)
    names = list(ds.STAT_NAMES)
    stream = [(args.site, i) for i in range(len(s_out))] + [("held-in", i) for i in range(len(s_in))]
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(stream))
    first_alert: int | None = None
    seen_out = 0
    for k in order:
        segment, i = stream[k]
        src, z, s = (held_out, z_out, s_out) if segment == args.site else (held_in, z_in, s_in)
        p = float(sigmoid(np.asarray(z[i] / manifest.temperature)))
        monitor.observe(
            manifest.name,
            manifest.version,
            stats=dict(zip(names, map(float, src.stats[i]), strict=True)),
            score=p,
            decision=manifest.decision(p),
            segment=segment,
            out_of_scope=bool(s[i] > t),
        )
        if segment == args.site:
            seen_out += 1
            if first_alert is None and monitor.drifted(manifest.name, manifest.version, args.site):
                first_alert = seen_out
    for segment in (args.site, "held-in"):
        psi = monitor.current(manifest.name, manifest.version, segment)
        top = sorted(psi.items(), key=lambda kv: -kv[1])[:4]
        print(
            f"segment {segment}: PSI "
            + ", ".join(f"{k} {v:.2f}" for k, v in top)
            + f" (alert above {DEFAULT_PSI_THRESHOLD}); out-of-scope share "
            + f"{monitor.current_out_of_scope_share(manifest.name, manifest.version, segment) or 0:.3f}"
        )
    print(
        f"first PSI above {DEFAULT_PSI_THRESHOLD} for {args.site} after {first_alert} of its studies "
        f"(window {DEFAULT_WINDOW}, minimum {DEFAULT_MIN_COUNT})"
    )


if __name__ == "__main__":
    main()
