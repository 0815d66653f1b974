"""What every section of the GPU suite shares: the model, synthetic inputs, timing, FLOPs, peaks.

Imports nothing of Sightline beyond ``sightline_explain.core`` (plain torch): on the GPU machine
only that image's python3 and packages exist (torch yes; pydantic, kserve, tritonclient no).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sightline_explain.core.nets import load_checkpoint
from torch import nn

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "derm-cnn"

#: Dense peak TFLOP/s from the vendors' datasheets (SXM parts; sparsity not counted), matched as a
#: substring of torch.cuda.get_device_name(). Leads, not readings: the suite also measures a
#: matrix-product ceiling in the same run.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.1, "fp16": 362.1},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
}


@dataclass(frozen=True)
class ModelSpec:
    """The served model as the repository describes it."""

    repository: Path
    version: int
    architecture: dict[str, Any]
    height: int
    width: int
    input_name: str
    output_name: str
    weights: Path


def model_spec(repository: Path = REPO / "model_repository") -> ModelSpec:
    """manifest.json and config.pbtxt read without pydantic; model.pt checked against its sha256."""
    root = repository / MODEL_NAME
    manifest = json.loads((root / "manifest.json").read_text())
    rel = f"{manifest['version']}/model.pt"
    weights = root / rel
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != manifest["artifacts"][rel]:
        raise RuntimeError(f"{weights} does not match its sha256 in manifest.json")
    config = (root / "config.pbtxt").read_text()
    names = re.findall(r'(input|output) \[ \{ name: "([^"]+)"', config)
    io = dict(names)
    pre = manifest["preprocessing"]
    return ModelSpec(
        repository=repository,
        version=int(manifest["version"]),
        architecture=manifest["architecture"],
        height=int(pre["height"]),
        width=int(pre["width"]),
        input_name=io["input"],
        output_name=io["output"],
        weights=weights,
    )


def load_model(spec: ModelSpec, device: torch.device) -> nn.Module:
    """The eval-mode network with frozen weights on ``device``."""
    model = load_checkpoint(str(spec.weights), spec.architecture).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def synthetic(spec: ModelSpec, batch: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Normalised-looking random images (never zeros: they can run faster than real data)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, spec.height, spec.width, generator=gen).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], object], device: torch.device, *, iters: int, seconds: float, warmup: int = 3
) -> list[float]:
    """Seconds per call, synchronised after each: at most ``iters`` calls or ``seconds`` of them."""
    for _ in range(warmup):
        fn()
    sync(device)
    out: list[float] = []
    stop = time.perf_counter() + seconds
    while len(out) < iters and (not out or time.perf_counter() < stop):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def figures(samples: list[float], batch: int, flops_per_image: float, peak_tflops: float) -> dict[str, Any]:
    """Latency p50/p99 (ms), images/s at the median, achieved TFLOP/s and % of the peak."""
    p50 = statistics.median(samples)
    ips = batch / p50
    tflops = ips * flops_per_image / 1e12
    return {
        "batch": batch,
        "n": len(samples),
        "p50_ms": round(p50 * 1000, 4),
        "p99_ms": round(percentile(samples, 99) * 1000, 4),
        "images_per_s": round(ips, 2),
        "tflops": round(tflops, 6),
        "pct_peak": round(100 * tflops / peak_tflops, 5) if peak_tflops > 0 else None,
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch.utils.flop_counter (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """TFLOP/s of an n x n x n matrix product on random data (the ceiling measured in this run)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    samples = time_fn(lambda: a @ b, device, iters=repeats, seconds=5.0, warmup=2)
    return 2 * n**3 / statistics.median(samples) / 1e12


def datasheet_peaks(card: str) -> dict[str, float] | None:
    for key, peaks in PEAK_TFLOPS.items():
        if key in card:
            return peaks
    return None


def precision_peak(peaks: dict[str, float], precision: str) -> float:
    """The peak that applies to a precision: fp32 convolutions run as TF32 when cuDNN allows it."""
    if precision == "fp32" and torch.backends.cudnn.allow_tf32 and "tf32" in peaks:
        return peaks["tf32"]
    return peaks[precision]
