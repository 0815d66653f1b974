"""In-process inference latency of the served model: ONNX Runtime vs torch, batch 1 and 8.

Prints figures; does not fail on timing. Usage:
    .venv/bin/python -m benchmarks.bench_model [--repository model_repository] [--model derm-cnn]
        [--threads 2]
On a GPU machine it also prints torch throughput at batch 1..256 (fp32 and fp16 autocast).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sightline_common.manifest import load_manifest, verify_artifact
from sightline_explain.core.nets import load_checkpoint


def _time(fn: Callable[[], object], repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _row(engine: str, batch: int, ms: list[float]) -> str:
    p50, p90 = statistics.median(ms), float(np.percentile(ms, 90))
    rate = batch / p50 * 1000
    return f"{engine:<12} batch {batch:>3}: p50 {p50:7.2f} ms  p90 {p90:7.2f} ms  {rate:8.1f} img/s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="derm-cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    manifest = load_manifest(args.repository, args.model)
    spec = manifest.preprocessing
    onnx_path = verify_artifact(args.repository, manifest, f"{manifest.version}/model.onnx")
    pt_path = verify_artifact(args.repository, manifest, f"{manifest.version}/model.pt")
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    net = load_checkpoint(str(pt_path), manifest.architecture)
    print(
        f"{args.model} v{manifest.version} input 3x{spec.height}x{spec.width}, {args.threads} threads, "
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}"
    )
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        x = rng.standard_normal((batch, 3, spec.height, spec.width), dtype=np.float32)
        print(_row("onnxruntime", batch, _time(lambda x=x: session.run(None, {"image": x}), args.repeats)))
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            print(_row("torch", batch, _time(lambda xt=xt: net(xt), args.repeats)))

    if torch.cuda.is_available():
        gpu = net.cuda()
        print(f"GPU: {torch.cuda.get_device_name()}")
        for dtype in (torch.float32, torch.float16):
            for batch in (1, 8, 32, 64, 128, 256):
                xg = torch.randn(batch, 3, spec.height, spec.width, device="cuda")

                def step(xg: torch.Tensor = xg, dtype: torch.dtype = dtype) -> None:
                    with (
                        torch.inference_mode(),
                        torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32),
                    ):
                        gpu(xg)
                    torch.cuda.synchronize()

                print(_row(f"torch-cuda-{str(dtype).split('.')[-1]}", batch, _time(step, 30)))


if __name__ == "__main__":
    main()
