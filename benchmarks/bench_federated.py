"""Centralised vs federated (FedAvg, FedProx, client weighting, DP) vs each site alone on HAM10000.

Every model is trained by the same recipe (LesionNet, the same augmentation and class weight) at a
size a 2-core CPU gets through in about 25 minutes, exported to a scratch model repository and
scored by the same evaluation as ``sightline evaluate`` (test split, lesion-level bootstrap CIs,
per site). One round is one local epoch at every site, so rounds and central epochs cost the same
compute. Prints the table (overall and per-site test AUROC, rounds, bytes per round) and the
privacy-utility curve (epsilon vs test AUROC); writes benchmarks/results/federated.json and
federated.png (validation AUROC by round; epsilon vs AUROC).

    .venv/bin/python -m benchmarks.bench_federated [--rounds 12] [--input-size 48]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from sightline.ml import data as ds
from sightline.ml.evaluate import run_evaluation
from sightline.ml.federated import run_federated
from sightline.ml.federated_config import HAM10000_SITES, FederatedConfig, PrivacyConfig
from sightline.ml.train import train
from sightline.ml.train_config import TrainConfig

RESULTS = Path(__file__).parent / "results"
ARCHITECTURE = {"name": "LesionNet", "kwargs": {"widths": [16, 32, 64, 128], "dropout": 0.2}}


def recipe(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return {
        "seed": 0,
        "cache_dir": ".cache",
        "repository": str(work / "repository"),
        "input_size": args.input_size,
        "architecture": ARCHITECTURE,
        "batch_size": 64,
        "lr": 0.003,
        "threads": 2,
    }


def evaluate(repository: Path, name: str, out: Path, n_bootstrap: int) -> dict[str, Any]:
    """``sightline evaluate``'s figures on the test split: overall and per site, with 95% CIs."""
    report = run_evaluation(repository, name, split="test", out=out / name, n_bootstrap=n_bootstrap)

    def auc(row: dict[str, Any]) -> dict[str, Any]:
        return {"value": row["auroc"]["value"], "ci95": row["auroc"]["ci95"], "malignant": row["positives"]}

    sites = {s: auc(r) for s, r in report["by_attribute"]["site"].items()}
    return {"overall": auc(report["overall"]), "sites": sites, "mean_of_sites": mean_of_sites(sites)}


def mean_of_sites(sites: dict[str, dict[str, Any]]) -> float:
    """The mean test AUROC of the sites with enough malignant images for a CI (rosendahl,
    vidir_modern): vidir_molemax's 3 and vienna_dias's 5 make their AUROCs swing by chance."""
    values = [c["value"] for c in sites.values() if c["value"] is not None]
    with_ci = [
        c["value"]
        for c in sites.values()
        if c["value"] is not None and c["ci95"] and c["ci95"][0] is not None
    ]
    return sum(with_ci or values) / len(with_ci or values)


def central_bytes(sites: list[str]) -> int:
    """What pooling moves instead: every training JPEG of every site, once."""
    root = ds.dataset_root(None)
    meta = ds.read_metadata(root)
    rows = meta[(meta["split"] == "train") & meta["site"].isin(sites)]
    return int(sum((root / rel).stat().st_size for rel in rows["image"]))


def fmt(cell: dict[str, Any]) -> str:
    if cell["value"] is None:
        return "n/a"
    lo, hi = cell["ci95"] if cell["ci95"] else (None, None)
    return f"{cell['value']:.3f}" + (
        f" ({lo:.2f}-{hi:.2f})" if lo is not None else f" [{cell['malignant']} mal.]"
    )


def table(rows: list[dict[str, Any]], sites: list[str]) -> str:
    head = [
        "model",
        "rounds/epochs",
        "test AUROC pooled (95% CI)",
        "mean of sites with CI",
        *sites,
        "bytes/round",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        per = [fmt(r["test"]["sites"].get(s, {"value": None, "ci95": None, "malignant": 0})) for s in sites]
        traffic = (
            f"{r['bytes_per_round'] / 1e6:.1f} MB" if r.get("bytes_per_round") else r.get("traffic", "-")
        )
        lines.append(
            f"| {r['label']} | {r['rounds']} | {fmt(r['test']['overall'])} | "
            f"{r['test']['mean_of_sites']:.3f} | " + " | ".join(per) + f" | {traffic} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], privacy: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 4.8))
    for r in rows:
        if r.get("curve"):
            xs, ys = zip(*r["curve"], strict=True)
            left.plot(xs, ys, marker="o", ms=3, label=r["label"], ls="--" if r["name"] == "central" else "-")
        if r.get("macro_curve"):
            xs, ys = zip(*r["macro_curve"], strict=True)
            middle.plot(xs, ys, marker="o", ms=3, label=r["label"])
    left.set_xlabel("round (federated) / epoch (centralised)")
    left.set_ylabel("validation AUROC, sites pooled")
    left.set_title("Rounds vs AUROC (pooled)")
    middle.set_xlabel("round")
    middle.set_ylabel("validation AUROC, mean of sites with >= 10 malignant")
    middle.set_title("Rounds vs AUROC (rosendahl, vidir_modern averaged)")
    for axis in (left, middle):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    baseline = [p for p in privacy if p["epsilon"] is None or math.isinf(p["epsilon"])]
    privacy = [p for p in privacy if p not in baseline]
    for p in baseline:
        right.axhline(p["auroc_mean_of_sites"], color="grey", ls="--", lw=1, label="z=0 (clipping only)")
    if privacy:
        eps = [p["epsilon"] for p in privacy]
        right.semilogx(eps, [p["auroc"] for p in privacy], marker="o", label="sites pooled")
        right.semilogx(
            eps, [p["auroc_mean_of_sites"] for p in privacy], marker="s", label="mean of sites with CI"
        )
        for p in privacy:
            right.annotate(
                f"z={p['noise_multiplier']:g}", (p["epsilon"], p["auroc_mean_of_sites"]), fontsize=8
            )
        right.legend(fontsize=7)
        right.set_xlabel("epsilon (site-level, delta=1e-5; larger = less private)")
        right.set_ylabel("test AUROC")
        right.set_title("Privacy vs utility (FedAvg, uniform weights, clip + noise)")
        right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="federated rounds = central epochs")
    parser.add_argument("--input-size", type=int, default=48)
    parser.add_argument("--mu", type=float, default=0.1, help="FedProx proximal mu")
    parser.add_argument(
        "--noise", type=float, nargs="*", default=[0.0, 0.01, 0.03, 0.1, 1.0], help="DP noise multipliers"
    )
    parser.add_argument(
        "--clip", type=float, default=5.0, help="DP clipping norm of a site's weight update (~8 unclipped)"
    )
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench_federated"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--render", action="store_true", help="redraw the table and plot from federated.json (no training)"
    )
    args = parser.parse_args()
    if args.render:
        render(args.results)
        return
    torch.set_num_threads(2)
    shutil.rmtree(args.work, ignore_errors=True)
    repository, evaluations = args.work / "repository", args.work / "evaluations"
    base = recipe(args, args.work)
    sites = list(HAM10000_SITES)
    rows: list[dict[str, Any]] = []
    privacy: list[dict[str, Any]] = []
    t_all = time.monotonic()

    def save(rows: list[dict[str, Any]], privacy: list[dict[str, Any]], *, complete: bool) -> None:
        """After every model: a run cut short still leaves its figures."""
        args.results.mkdir(parents=True, exist_ok=True)
        summary = {
            "complete": complete,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "architecture": ARCHITECTURE,
            "rows": rows,
            "privacy_curve": [
                {**p, "epsilon": None if math.isinf(p["epsilon"]) else p["epsilon"]} for p in privacy
            ],
            "table_markdown": table(rows, sites),
            "privacy_markdown": privacy_table(privacy),
            "seconds": round(time.monotonic() - t_all),
        }
        (args.results / "federated.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot(rows, privacy, args.results / "federated.png")

    def record(label: str, name: str, seconds: float, **extra: Any) -> dict[str, Any]:
        row = {"label": label, "name": name, "seconds": seconds, **extra}
        row["test"] = evaluate(repository, name, evaluations, args.bootstrap)
        rows.append(row)
        per = ", ".join(f"{s} {fmt(c)}" for s, c in row["test"]["sites"].items())
        print(
            f"[{time.monotonic() - t_all:5.0f} s] {label}: test AUROC {fmt(row['test']['overall'])} pooled, "
            f"{row['test']['mean_of_sites']:.3f} mean of sites ({per})",
            flush=True,
        )
        save(rows, privacy, complete=False)
        return row

    # Centralised: every site's rows pooled, as `sightline train` does.
    t0 = time.monotonic()
    central = train(
        TrainConfig(name="central", run_dir=str(args.work / "runs/central"), epochs=args.rounds, **base),
        progress=False,
    )
    curve = [(h["epoch"], h["val_auroc"]) for h in central.history]
    record(
        "centralised",
        "central",
        time.monotonic() - t0,
        rounds=args.rounds,
        curve=curve,
        traffic=f"{central_bytes(sites) / 1e6:.0f} MB once (images)",
    )

    def federated(label: str, name: str, **changes: Any) -> dict[str, Any]:
        cfg = FederatedConfig(
            name=name,
            run_dir=str(args.work / "runs" / name),
            rounds=args.rounds,
            sites=sites,
            **{**base, **changes},
        )
        run = run_federated(cfg, progress=False)
        fed = run.fields["training_data"]["federated"]
        curve = [(h["round"], h["val-auroc"]) for h in fed["history"] if h["round"] > 0]
        macro = [(h["round"], h["val-auroc-macro"]) for h in fed["history"] if h["round"] > 0]
        return record(
            label,
            name,
            run.outcome.seconds,
            rounds=f"{args.rounds} (best {fed['best_round']})",
            curve=curve,
            macro_curve=macro,
            bytes_per_round=fed["bytes_per_round"],
            history=fed["history"],
            privacy=fed.get("privacy"),
        )

    federated("FedAvg (weights: images)", "fedavg")
    federated(f"FedProx mu={args.mu:g}", "fedprox", strategy="fedprox", proximal_mu=args.mu)
    federated("FedAvg (weights: uniform)", "fedavg-uniform", weighting="uniform")

    # Each site alone: the same recipe on its own rows (and its own validation rows).
    for site in sites:
        t0 = time.monotonic()
        others = [s for s in sites if s != site]
        cfg = TrainConfig(
            name=f"alone-{site}",
            run_dir=str(args.work / "runs" / site),
            epochs=args.rounds,
            exclude_sites=others,
            **base,
        )
        train(cfg, progress=False)
        record(f"{site} alone", f"alone-{site}", time.monotonic() - t0, rounds=args.rounds, traffic="0")

    # Differential privacy: FedAvg with uniform weights, each site's update clipped, noise on the
    # mean; z=0 is clipping alone (the baseline, with the same batch-norm handling).
    for z in args.noise:
        dp = PrivacyConfig(noise_multiplier=z, clipping_norm=args.clip).model_dump()
        row = federated(f"DP z={z:g} C={args.clip:g}", f"dp-{z:g}", weighting="uniform", privacy=dp)
        privacy.append(
            {
                "noise_multiplier": z,
                "epsilon": math.inf if row["privacy"]["epsilon"] is None else row["privacy"]["epsilon"],
                "auroc": row["test"]["overall"]["value"],
                "auroc_mean_of_sites": row["test"]["mean_of_sites"],
            }
        )

    save(rows, privacy, complete=True)
    print("\n" + table(rows, sites) + "\n\n" + privacy_table(privacy))
    print(f"\ntotal {time.monotonic() - t_all:.0f} s")
    print(f"wrote {args.results / 'federated.json'} and federated.png")


def privacy_table(privacy: list[dict[str, Any]]) -> str:
    lines = [
        "| noise multiplier z | epsilon (delta 1e-5) | test AUROC pooled | mean of sites with CI |",
        "|---|---|---|---|",
    ]
    for p in privacy:
        eps = "inf" if p["epsilon"] is None or math.isinf(p["epsilon"]) else f"{p['epsilon']:.3g}"
        lines.append(
            f"| {p['noise_multiplier']:g} | {eps} | {p['auroc']:.3f} | {p['auroc_mean_of_sites']:.3f} |"
        )
    return "\n".join(lines)


def render(results: Path) -> None:
    """Recompute the derived figures of a finished run and redraw its table and plot."""
    path = results / "federated.json"
    summary = json.loads(path.read_text())
    rows, sites = summary["rows"], list(HAM10000_SITES)
    for row in rows:
        row["test"]["mean_of_sites"] = mean_of_sites(row["test"]["sites"])
    by_name = {r["name"]: r for r in rows}
    for p in summary["privacy_curve"]:
        if (dp := by_name.get(f"dp-{p['noise_multiplier']:g}")) is not None:
            p["auroc_mean_of_sites"] = dp["test"]["mean_of_sites"]
    summary["table_markdown"] = table(rows, sites)
    summary["privacy_markdown"] = privacy_table(summary["privacy_curve"])
    path.write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, summary["privacy_curve"], results / "federated.png")
    print(summary["table_markdown"] + "\n\n" + summary["privacy_markdown"])


if __name__ == "__main__":
    main()
