"""Grad-CAM cost against a forward pass of the served model, with Captum's LayerGradCam beside it.

Prints figures; does not fail on timing. Usage:
    .venv/bin/python -m benchmarks.bench_explain [--repository model_repository] [--model derm-cnn]
        [--threads 2]
On a CUDA machine it also runs batch 1..64 on the GPU (and pytorch-grad-cam when installed).
The issue's GPU goal: Grad-CAM <= 1.1x a forward pass at batch >= 16.
"""

# The timed closures run inside the loop iteration that defines them.
# ruff: noqa: B023
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from sightline_explain.core.gradcam import explain_batch
from sightline_explain.core.model import load_served_model
from torch import nn


class _TwoLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([-z, z], dim=1)


def _time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None], warmup: int = 3
) -> dict[str, float]:
    """Median ms of each function, measured round-robin so that load from other processes
    (shared cores) affects them alike and the ratios stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in samples.items()}


def run(model: nn.Module, device: str, batches: list[int], repeats: int, h: int, w: int) -> None:
    model = model.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    captum = LayerGradCam(_TwoLogits(model), model.target_layer)  # type: ignore[arg-type]
    pgc = None
    if device == "cuda":
        try:
            from pytorch_grad_cam import GradCAM  # type: ignore[import-not-found]
            from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget  # type: ignore[import-not-found]

            pgc = (GradCAM(model=model, target_layers=[model.target_layer]), BinaryClassifierOutputTarget)
        except ImportError:
            pass
    print(f"\n{device}: median ms per batch (ratio = time / forward time)")
    header = f"{'batch':>5} {'forward':>9} {'grad-cam':>9} {'ratio':>6} {'grad-cam++':>10}"
    header += f" {'captum':>9} {'ratio':>6}"
    print(header + (f" {'pytorch-grad-cam':>16}" if pgc else ""))
    for n in batches:
        x = torch.randn(n, 3, h, w, device=device)
        targets = [1] * n

        def forward() -> object:
            with torch.no_grad():
                return model(x)

        fns: dict[str, Callable[[], object]] = {
            "forward": forward,
            "grad-cam": lambda: explain_batch(model, x, targets),
            "grad-cam++": lambda: explain_batch(model, x, targets, "grad-cam++"),
            "captum": lambda: captum.attribute(x, target=targets, relu_attributions=True),
        }
        if pgc:
            cam, target_cls = pgc
            fns["pytorch-grad-cam"] = lambda: cam(input_tensor=x, targets=[target_cls(1)] * n)
        ms = _time_interleaved(fns, repeats, sync)
        fwd, ours, cap = ms["forward"], ms["grad-cam"], ms["captum"]
        line = (
            f"{n:>5} {fwd:>9.2f} {ours:>9.2f} {ours / fwd:>6.2f} {ms['grad-cam++']:>10.2f} {cap:>9.2f} "
            f"{cap / fwd:>6.2f}"
        )
        if pgc:
            line += f" {ms['pytorch-grad-cam']:>16.2f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="derm-cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest, model = load_served_model(args.repository, args.model)
    h, w = manifest.preprocessing.height, manifest.preprocessing.width
    print(
        f"{manifest.name} v{manifest.version}{' (placeholder)' if manifest.placeholder else ''} "
        f"{manifest.architecture['kwargs']} input {h}x{w}; torch {torch.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}"
    )
    run(model, "cpu", [1, 8], args.repeats, h, w)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        run(model, "cuda", [1, 2, 4, 8, 16, 32, 64], args.repeats * 5, h, w)
    else:
        print("\nno CUDA device: GPU figures (batch 1..64, pytorch-grad-cam) not measured")


if __name__ == "__main__":
    main()
