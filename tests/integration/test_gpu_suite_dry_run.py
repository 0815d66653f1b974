"""The GPU suite (benchmarks/gpu_suite.sh) in its --dry-run mode: CPU, tiny sizes, every section.

Runs the real script as CI would on the first GPU machine, the bundled tritonserver included, and
checks that the JSON holds every section with sane values (shapes, counts, errors against fp32),
never timings: a GPU figure measured on this CPU would mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
from typing import Any

import pytest

from tests.conftest import REPO, skip_or_fail_in_ci

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECTIONS = ("env", "inprocess", "triton", "gradcam", "train", "cpu_baseline", "onnxruntime")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    if importlib.util.find_spec("pytriton") is None:
        skip_or_fail_in_ci("nvidia-pytriton (the bundled tritonserver) is not installed")
    out = tmp_path_factory.mktemp("gpu-suite")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--dry-run", "--results-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu-cpu-dry-run.json").read_text())
    return results, (out / "gpu-cpu-dry-run.md").read_text(), proc.stdout


def _timed(row: dict[str, Any]) -> None:
    assert row["n"] >= 1
    assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert row["images_per_s"] > 0 and math.isfinite(row["images_per_s"])
    assert row["pct_peak"] > 0


def test_every_section_ran_without_error(dry_run: tuple[dict[str, Any], str, str]) -> None:
    results, _, _ = dry_run
    assert results["dry_run"] is True
    assert set(SECTIONS) <= set(results["sections"])
    for name in SECTIONS:
        assert "error" not in results["sections"][name], (name, results["sections"][name])
        for row in results["sections"][name].get("rows", []):
            assert "error" not in row, (name, row)


def test_flops_and_peaks_are_counted(dry_run: tuple[dict[str, Any], str, str]) -> None:
    env = dry_run[0]["sections"]["env"]
    flops = env["flops_per_image"]
    # LesionNet at 112x112 is about 0.28 GFLOP a forward pass; a training step about 3x that.
    assert 1e8 < flops["forward"] < 1e9
    assert flops["forward"] <= flops["gradcam"] < 1.01 * flops["forward"]
    assert 2 * flops["forward"] < flops["train"] < 4 * flops["forward"]
    assert env["peak_source"] == "measured matmul"
    assert all(v > 0 for v in env["peaks"].values())


def test_inprocess_variants_match_fp32(dry_run: tuple[dict[str, Any], str, str]) -> None:
    results = dry_run[0]
    rows = results["sections"]["inprocess"]["rows"]
    from benchmarks.gpu.torch_bench import VARIANTS

    expected = {(v[0], b) for v in VARIANTS for b in results["plan"]["batches"]}
    assert {(r["variant"], r["batch"]) for r in rows} == expected
    for row in rows:
        if row["variant"].endswith("-graph"):
            assert "CUDA" in row["skipped"]  # no CUDA here: said, not silently left out
            continue
        _timed(row)
        assert row["rel_err_vs_fp32"] < (1e-5 if row["precision"] == "fp32" else 0.05)


def test_triton_served_model_answers_like_torch(dry_run: tuple[dict[str, Any], str, str]) -> None:
    results = dry_run[0]
    section = results["sections"]["triton"]
    assert [r["batch"] for r in section["rows"]] == results["plan"]["batches"]
    for row in section["rows"]:
        _timed(row)
        assert row["rel_err_vs_fp32"] < 0.05
        assert row["concurrency"] == results["plan"]["triton_concurrency"]
    assert section["ready_s"] > 0


def test_gradcam_training_cpu_and_onnxruntime_rows(dry_run: tuple[dict[str, Any], str, str]) -> None:
    results = dry_run[0]
    sections, plan = results["sections"], results["plan"]
    gradcam = sections["gradcam"]["rows"]
    assert {(r["precision"], r["batch"]) for r in gradcam} == {
        (p, b) for p in ("fp32", "bf16") for b in plan["gradcam_batches"]
    }
    for row in gradcam:
        _timed(row["forward"])
        _timed(row["gradcam"])
        assert row["ratio"] > 0
        assert 0 <= row["heatmap_range"][0] <= row["heatmap_range"][1] <= 1
    train = sections["train"]["rows"]
    assert {r["precision"] for r in train} == {"fp32", "bf16", "fp16"}
    for row in train:
        _timed(row)
        assert row["loss_finite"]
    for row in sections["cpu_baseline"]["rows"]:
        _timed(row)
    assert [r["variant"] for r in sections["onnxruntime"]["rows"]] == ["ort-cpu"] * len(plan["batches"])


def test_markdown_table_and_goals(dry_run: tuple[dict[str, Any], str, str]) -> None:
    results, md, stdout = dry_run
    for heading in ("## Inference", "## Grad-CAM against a forward pass", "## Training", "## Goals"):
        assert heading in md
    for path in ("torch in-process", "Triton python backend", "ONNX Runtime", "CPU (same run)"):
        assert f"| {path} |" in md
    assert md in stdout  # the table is printed last, for the device tool's output tail
    assert any(g["goal"].startswith("Triton p50") for g in results["goals"])
