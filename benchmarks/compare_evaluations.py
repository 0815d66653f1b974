"""Two evaluations of one split side by side: pooled and per-site AUROC, ECE, sensitivity and
specificity with their CIs, as a table (stdout, ``comparison.json``) and a plot (``comparison.png``).

How a training recipe is chosen on validation only (issue 16): evaluate the served model and the
new run on the validation split, then

    .venv/bin/sightline evaluate --repository model_repository --split val --out var/eval-v1-val
    .venv/bin/sightline evaluate --repository .cache/v2/repository --split val --out var/eval-v2-val
    .venv/bin/python -m benchmarks.compare_evaluations var/eval-v1-val/evaluation.json v1 \
        var/eval-v2-val/evaluation.json v2 --out benchmarks/results/derm-cnn-v2-trial
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

METRICS = ("auroc", "ece", "sensitivity", "specificity")


def _figure(group: dict[str, Any], metric: str) -> dict[str, Any]:
    value = group.get(metric)
    if isinstance(value, dict):
        return {"value": value.get("value"), "ci95": value.get("ci95")}
    return {"value": value, "ci95": None}


def rows(report: dict[str, Any], attribute: str = "site") -> dict[str, dict[str, Any]]:
    """``{"pooled": {...}, "<site>": {...}}`` with n, positives and each metric's value and CI."""
    groups = {"pooled": report["overall"], **report.get("by_attribute", {}).get(attribute, {})}
    return {
        name: {"n": g.get("n"), "positives": g.get("positives"), **{m: _figure(g, m) for m in METRICS}}
        for name, g in groups.items()
    }


def compare(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    first = next(iter(reports.values()))
    return {
        "split": first.get("split"),
        "model": first.get("model"),
        "n_bootstrap": first.get("n_bootstrap"),
        "bootstrap_unit": first.get("bootstrap_unit"),
        "runs": {label: rows(report) for label, report in reports.items()},
    }


def table(comparison: dict[str, Any]) -> str:
    lines = [
        "| group | run | n (malignant) | AUROC (95% CI) | ECE | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = comparison["runs"]
    for group in next(iter(runs.values())):
        for label, by_group in runs.items():
            g = by_group.get(group)
            if g is None:
                continue

            def cell(metric: str, g: dict[str, Any] = g) -> str:
                f = g[metric]
                if f["value"] is None:
                    return "n/a"
                shown = f["ci95"] and None not in f["ci95"] and metric == "auroc"
                ci = f" ({f['ci95'][0]:.3f}-{f['ci95'][1]:.3f})" if shown else ""
                return f"{f['value']:.3f}{ci}"

            lines.append(
                f"| {group} | {label} | {g['n']} ({g['positives']}) | {cell('auroc')} | {cell('ece')} | "
                f"{cell('sensitivity')} | {cell('specificity')} |"
            )
    return "\n".join(lines)


def plot(comparison: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = comparison["runs"]
    groups = list(next(iter(runs.values())))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(runs)
    for i, (label, by_group) in enumerate(runs.items()):
        for ax, metric in zip(axes, ("auroc", "ece"), strict=True):
            xs, ys, lo, hi = [], [], [], []
            for j, group in enumerate(groups):
                f = by_group.get(group, {}).get(metric, {"value": None, "ci95": None})
                if f["value"] is None:
                    continue
                xs.append(j + (i - (len(runs) - 1) / 2) * width)
                ys.append(f["value"])
                # No CI (a group below the minimum of positives): no error bar.
                ci = f["ci95"] if f["ci95"] and None not in f["ci95"] else [f["value"], f["value"]]
                lo.append(f["value"] - ci[0])
                hi.append(ci[1] - f["value"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label)
    for ax, metric in zip(axes, ("AUROC (95% CI)", "ECE (95% CI)"), strict=True):
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=20)
        ax.set_title(f"{metric}, {comparison['split']} split")
        ax.legend()
    axes[0].set_ylim(0.5, 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pairs", nargs="+", help="evaluation.json LABEL [evaluation.json LABEL ...]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give each evaluation.json with a label")
    pairs = zip(args.pairs[::2], args.pairs[1::2], strict=True)
    reports = {label: json.loads(Path(path).read_text()) for path, label in pairs}
    splits = {r.get("split") for r in reports.values()}
    if len(splits) != 1:
        parser.error(f"the evaluations are of different splits: {sorted(map(str, splits))}")
    comparison = compare(reports)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    plot(comparison, args.out / "comparison.png")
    print(table(comparison))
    return comparison


if __name__ == "__main__":
    main()
