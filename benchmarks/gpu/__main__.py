"""Run the GPU suite: each section in its own process under its own timeout, results written
after each section (a section that hangs costs its timeout, not the run).

    python -m benchmarks.gpu [--dry-run] [--results-dir benchmarks/results] [--deadline-s 450]

Usually started by ``benchmarks/gpu_suite.sh``, whose header says how to run it on the lent GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.gpu.common import REPO
from benchmarks.gpu.runner import run_section

#: Full-size plan for a CUDA machine; the dry run shrinks every size and count.
GPU_PLAN: dict[str, Any] = {
    "batches": [1, 8, 64, 256],
    "gradcam_batches": [1, 2, 4, 8, 16, 32, 64],
    "train_batches": [64, 256],
    "cpu_batches": [1, 8],
    "iters": 200,
    "seconds": 1.0,
    "matmul_n": 8192,
    "cpu_matmul_n": 1024,
    "triton_instances": 2,
    "triton_concurrency": 4,
    "triton_precision": "bf16",
    "triton_shm_bytes": 64 << 20,
}
DRY_PLAN: dict[str, Any] = {
    **GPU_PLAN,
    "batches": [1, 2],
    "gradcam_batches": [1, 2],
    "train_batches": [4],
    "cpu_batches": [1, 2],
    "iters": 3,
    "seconds": 0.2,
    "matmul_n": 512,
    "cpu_matmul_n": 512,
    "triton_instances": 1,
    "triton_concurrency": 2,
    "triton_shm_bytes": 8 << 20,
}
#: A dry run's sections get this multiple of their GPU timeouts (the overall deadline still caps).
DRY_RUN_SLACK = 3.0
#: Seconds each section may take at most on a GPU (the overall deadline caps them further).
TIMEOUTS = {
    "env": 60,
    "inprocess": 120,
    "triton_start": 150,
    "triton": 90,
    "gradcam": 75,
    "train": 60,
    "cpu_baseline": 30,
    "onnxruntime": 45,
}


def _triton(plan: dict[str, Any], budget: Callable[[str], float]) -> dict[str, Any]:
    from benchmarks.gpu.triton_bench import TritonServer, run_triton_client

    with tempfile.TemporaryDirectory(prefix="gpu-suite-triton-") as tmp:
        try:
            server = TritonServer(Path(tmp), plan)
        except (RuntimeError, OSError) as exc:
            return {"error": f"tritonserver could not start: {exc}"}
        try:
            ready_s = server.wait_ready(budget("triton_start"))
            result = run_section(
                "triton", run_triton_client, {**plan, "triton_url": server.url}, budget("triton")
            )
            result["ready_s"] = round(ready_s, 1)
            result["tritonserver"] = str(server.binary)
            if "error" in result:
                result["server_log_tail"] = server.log_tail()
            return result
        except RuntimeError as exc:
            return {"error": str(exc)}
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every code path")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--deadline-s", type=float, default=450.0, help="for all sections together")
    parser.add_argument(
        "--copy-to",
        type=Path,
        default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
        help="also copy the results here (default: $OUT, the device tool's folder)",
    )
    args = parser.parse_args()

    import torch

    from benchmarks.gpu import torch_bench
    from benchmarks.gpu.report import goals, markdown

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("[gpu-suite] no CUDA device: run with --dry-run (CPU, tiny sizes)", file=sys.stderr)
        return 2
    plan: dict[str, Any] = {
        **(GPU_PLAN if cuda else DRY_PLAN),
        "device": "cuda:0" if cuda else "cpu",
        "dry_run": args.dry_run,
    }
    end = time.monotonic() + args.deadline_s

    # On the CPU a dry run's tiny sizes still pay for spawning, importing torch and fp16 kernels
    # that CPUs lack: on a busy 2-core machine the train section took 65 s of its GPU budget's 60.
    slack = DRY_RUN_SLACK if args.dry_run else 1.0

    def budget(name: str) -> float:
        return max(1.0, min(TIMEOUTS[name] * slack, end - time.monotonic() - 10))

    results: dict[str, Any] = {
        "suite": "benchmarks/gpu_suite.sh",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "plan": plan,
        "sections": {},
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def write() -> None:
        card = results["sections"].get("env", {}).get("card", "unknown")
        slug = "cpu-dry-run" if args.dry_run else re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
        paths["json"] = args.results_dir / f"gpu-{slug}.json"
        paths["md"] = args.results_dir / f"gpu-{slug}.md"
        results["goals"] = goals(results)
        paths["json"].write_text(json.dumps(results, indent=2) + "\n")
        paths["md"].write_text(markdown(results))

    env = run_section("env", torch_bench.run_env, plan, budget("env"))
    results["sections"]["env"] = env
    if "error" in env:
        write()
        print(env["error"], file=sys.stderr)
        return 1
    plan.update(peaks=env["peaks"], flops=env["flops_per_image"])
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("inprocess", lambda: run_section("inprocess", torch_bench.run_inprocess, plan, budget("inprocess"))),
        ("triton", lambda: _triton(plan, budget)),
        ("gradcam", lambda: run_section("gradcam", torch_bench.run_gradcam, plan, budget("gradcam"))),
        ("train", lambda: run_section("train", torch_bench.run_train, plan, budget("train"))),
        (
            "cpu_baseline",
            lambda: run_section("cpu_baseline", torch_bench.run_cpu_baseline, plan, budget("cpu_baseline")),
        ),
        (
            "onnxruntime",
            lambda: run_section("onnxruntime", torch_bench.run_onnxruntime, plan, budget("onnxruntime")),
        ),
    ]
    for name, run in sections:
        if end - time.monotonic() < 15:
            results["sections"][name] = {"error": "not run: the suite's deadline was reached"}
        else:
            results["sections"][name] = run()
        write()
    text = paths["md"].read_text()
    print(text)
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for path in paths.values():
            shutil.copy2(path, args.copy_to / path.name)
    print(f"[gpu-suite] wrote {paths['json']} and {paths['md']}")
    failed = [
        name
        for name, section in results["sections"].items()
        if "error" in section or any("error" in row for row in section.get("rows", []))
    ]
    if failed:
        print(f"[gpu-suite] errors in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
