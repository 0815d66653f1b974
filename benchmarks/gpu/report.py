"""The suite's markdown table and the issue's goals, read from the JSON results."""

from __future__ import annotations

from typing import Any


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _rows(results: dict[str, Any], section: str) -> list[dict[str, Any]]:
    data = results["sections"].get(section, {})
    return list(data.get("rows", [])) if isinstance(data, dict) else []


def _best_inprocess(results: dict[str, Any], batch: int, variant: str) -> float | None:
    for row in _rows(results, "inprocess"):
        if row["batch"] == batch and row["variant"] == variant and "images_per_s" in row:
            return float(row["images_per_s"])
    return None


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's GPU goals, each with its measured value (None where a figure is missing)."""
    out: list[dict[str, Any]] = []
    for row in _rows(results, "triton"):
        if "images_per_s" not in row:
            continue
        # Same precision and layout as the served model, input already on the device.
        inproc = _best_inprocess(results, row["batch"], f"{row['precision']}-cl")
        if row["batch"] >= 64:
            ratio = row["images_per_s"] / inproc if inproc else None
            out.append(
                {
                    "goal": f"Triton >= 0.8x in-process img/s, batch {row['batch']}",
                    "value": ratio,
                    "met": ratio is not None and ratio >= 0.8,
                }
            )
        if row["batch"] == 1:
            out.append(
                {"goal": "Triton p50 <= 2 ms at batch 1", "value": row["p50_ms"], "met": row["p50_ms"] <= 2.0}
            )
    for row in _rows(results, "gradcam"):
        if row["batch"] >= 16:
            out.append(
                {
                    "goal": f"Grad-CAM <= 1.1x forward, {row['precision']} batch {row['batch']}",
                    "value": row["ratio"],
                    "met": row["ratio"] <= 1.1,
                }
            )
    return out


def markdown(results: dict[str, Any]) -> str:
    """Tables: inference (in-process, served, ONNX Runtime, CPU), Grad-CAM, training, goals."""
    env = results["sections"].get("env", {})
    lines = [
        f"# GPU suite: {env.get('card', '?')}{' (dry run: CPU, tiny sizes)' if results['dry_run'] else ''}",
        "",
        f"{results['started']}, torch {env.get('torch', '?')}; % of peak against the "
        f"{env.get('peak_source', '?')} peak {env.get('peaks')} TFLOP/s; measured matmul ceiling "
        f"{env.get('peak_tflops_measured')} TFLOP/s; FLOPs per image {env.get('flops_per_image')}.",
        "",
        "## Inference (images/s at the median for in-process; served: throughput at the given concurrency, "
        "p50/p99 at concurrency 1)",
        "",
        "| path | variant | batch | p50 ms | p99 ms | img/s | TFLOP/s | % peak | rel. err vs fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for section, path in (
        ("inprocess", "torch in-process"),
        ("triton", "Triton python backend"),
        ("onnxruntime", "ONNX Runtime"),
        ("cpu_baseline", "CPU (same run)"),
    ):
        for row in _rows(results, section):
            if "skipped" in row or "error" in row:
                why = f"skipped: {row['skipped']}" if "skipped" in row else f"error: {row['error'][:120]}"
                lines.append(f"| {path} | {row['variant']} | {row['batch']} | {why} ||||||")
                continue
            lines.append(
                f"| {path} | {row['variant']} | {row['batch']} | "
                f"{_num(row['p50_ms'])} | {_num(row['p99_ms'])} | "
                f"{_num(row['images_per_s'], 1)} | {_num(row['tflops'], 3)} | {_num(row['pct_peak'], 3)} | "
                f"{_num(row.get('rel_err_vs_fp32'), 4)} |"
            )
    lines += [
        "",
        "## Grad-CAM against a forward pass",
        "",
        "| precision | batch | forward p50 ms | Grad-CAM p50 ms | ratio | Grad-CAM p99 ms "
        "| Grad-CAM % peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(results, "gradcam"):
        gc = row["gradcam"]
        lines.append(
            f"| {row['precision']} | {row['batch']} | {_num(row['forward']['p50_ms'])} | "
            f"{_num(gc['p50_ms'])} | {_num(row['ratio'])} | {_num(gc['p99_ms'])} | "
            f"{_num(gc['pct_peak'], 3)} |"
        )
    lines += [
        "",
        "## Training (synthetic images, AdamW, channels-last)",
        "",
        "| precision | batch | step p50 ms | img/s | TFLOP/s | % peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(results, "train"):
        lines.append(
            f"| {row['precision']} | {row['batch']} | {_num(row['p50_ms'])} | "
            f"{_num(row['images_per_s'], 1)} | {_num(row['tflops'], 3)} | {_num(row['pct_peak'], 3)} |"
        )
    lines += ["", "## Goals (issue 15)", "", "| goal | measured | met |", "|---|---:|---|"]
    for g in results.get("goals", []):
        lines.append(f"| {g['goal']} | {_num(g['value'])} | {'yes' if g['met'] else 'no'} |")
    notes = [
        f"- {name}: {data['skipped'] if 'skipped' in data else data['error']}"
        for name, data in results["sections"].items()
        if isinstance(data, dict) and ("skipped" in data or "error" in data)
    ]
    if notes:
        lines += ["", "## Not measured", "", *notes]
    return "\n".join(lines) + "\n"
