"""The explanation service against the same work done in-process in a loop (issue 15's explain goal).

Both sides do the whole job of an explanation the gateway asks for: read the de-identified DICOM
from the object store, decode and preprocess it, Grad-CAM in batches, render the overlay PNG and
store it with the heatmap. The service is the real one (``python -m sightline_explain``: Ray
Serve, ``@serve.batch``) started by ``sightline up``'s supervisor, sent ``--concurrency``
requests at a time over HTTP; the loop calls the service's own engine in this process, in
batches of the service's ``max_batch_size``, on the same number of torch threads (the service's
defaults, as ``sightline up`` runs it, unless ``--max-batch-size`` or ``--batch-wait-ms`` say
otherwise). Rounds alternate so that a slower spell of a shared machine touches both alike.
Also printed: the CPU each side spends per study (the service's by Ray process) and the
service's CPU while idle. Prints figures; does not fail on time.

    .venv/bin/python -m benchmarks.bench_explain_service [--requests 64] [--rounds 3]
        [--concurrency N] [--max-batch-size N] [--batch-wait-ms MS] [--env KEY=VALUE ...]

Goal (issue 15): the service's studies/s >= 0.8x the in-process loop's at the same batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import torch
from sightline_common.manifest import load_manifest
from sightline_common.storage import LocalDirStore
from sightline_explain.core.engine import EngineSet

from benchmarks.bench_inference import REPO, dermoscopy_dicoms, scrape

GOAL = 0.8


def in_process(
    engines: EngineSet, model: str, keys: list[str], batch: int, label: str
) -> tuple[float, dict[str, float]]:
    """Studies/s of the service's steps called in a loop, ``batch`` images per Grad-CAM, and the
    ms per study of each step (read + decode, Grad-CAM, overlay + store)."""
    engine = engines.get(model, None)
    key = engines.engine_key(engine)
    steps = dict.fromkeys(("read + decode", "Grad-CAM", "overlay + store"), 0.0)
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(keys), batch):
        chunk = keys[first : first + batch]
        t0 = time.perf_counter()
        images = [engine.prepare(engine.load_object(k)) for k in chunk]
        t1 = time.perf_counter()
        cams = engines.compute([(key, image, 1) for image in images])
        t2 = time.perf_counter()
        for n, (image, (heat, logit)) in enumerate(zip(images, cams, strict=True)):
            engine.publish(image, heat, logit, 1, f"inproc/{label}/{first + n}", t0)
        for step, took in zip(steps, (t1 - t0, t2 - t1, time.perf_counter() - t2), strict=True):
            steps[step] += took * 1000 / len(keys)
    steps["CPU"] = (time.process_time() - cpu) * 1000 / len(keys)
    return len(keys) / (time.perf_counter() - started), steps


async def served(
    url: str, model: str, version: int, keys: list[str], concurrency: int, label: str
) -> tuple[float, float]:
    """Studies/s and p50 ms of ``keys`` sent to the service ``concurrency`` at a time."""
    latencies: list[float] = []
    queue = list(enumerate(keys))

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            n, key = queue.pop()
            body = {
                "object_key": key,
                "model_name": model,
                "model_version": version,
                "target": 1,
                "output_prefix": f"served/{label}/{n}",
            }
            t = time.perf_counter()
            r = await http.post(f"{url}/v1/explain", json=body)
            r.raise_for_status()
            latencies.append((time.perf_counter() - t) * 1000)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(keys) / elapsed, statistics.median(latencies)


#: Ray's processes of the explain service, by what their command line names.
RAY_ROLES = (("ServeReplica", "replica"), ("ProxyActor", "proxy"), ("ServeController", "controller"))


def service_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of the explain process tree: Serve's replica, proxy and controller,
    and the rest (the driver, Ray's GCS and raylet and other workers)."""
    out = dict.fromkeys([role for _, role in RAY_ROLES] + ["rest"], 0.0)
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            cmdline, times = " ".join(proc.cmdline()), proc.cpu_times()
        except psutil.Error:
            continue
        role = next((r for marker, r in RAY_ROLES if marker in cmdline), "rest")
        out[role] += times.user + times.system
    return out


def batch_sizes(metrics: dict[str, float]) -> tuple[float, float]:
    """(sum, count) of the service's Grad-CAM batch-size histogram."""
    total = sum(v for k, v in metrics.items() if re.match(r"sightline_explain_batch_size_sum", k))
    count = sum(v for k, v in metrics.items() if re.match(r"sightline_explain_batch_size_count", k))
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="derm-cnn")
    parser.add_argument("--requests", type=int, default=64, help="explanations per round and side")
    parser.add_argument("--concurrency", type=int, help="requests in flight (default: the batch size)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, help="the service's (default: its default)")
    parser.add_argument("--batch-wait-ms", type=float, help="the service's (default: its default)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="more environment for the service"
    )
    args = parser.parse_args()
    from sightline_explain.settings import ExplainSettings

    defaults = ExplainSettings.model_fields
    batch = args.max_batch_size or defaults["max_batch_size"].default
    wait_s = defaults["batch_wait_timeout_s"].default
    if args.batch_wait_ms is not None:
        wait_s = args.batch_wait_ms / 1000
    service_env = {
        "SIGHTLINE_EXPLAIN_MAX_BATCH_SIZE": str(batch),
        "SIGHTLINE_EXPLAIN_BATCH_WAIT_TIMEOUT_S": str(wait_s),
        **dict(item.split("=", 1) for item in args.env),
    }
    threads = defaults["torch_threads"].default
    concurrency = args.concurrency or batch

    from sightline.stack import Stack, settings_on_free_ports

    repo = REPO / "model_repository"
    manifest = load_manifest(repo, args.model)
    spec = manifest.preprocessing
    dicoms = dermoscopy_dicoms(args.requests, spec.accepted_modalities[0], spec.accepted_sop_classes[0])
    dicoms = (dicoms * (args.requests // len(dicoms) + 1))[: args.requests]
    print(
        f"{manifest.name} v{manifest.version}{' (placeholder)' if manifest.placeholder else ''}, "
        f"input {spec.height}x{spec.width}; {len(dicoms)} DICOMs, "
        f"{statistics.mean(len(d) for d in dicoms) / 1024:.0f} KiB mean; batch {batch}, "
        f"concurrency {concurrency}, batch wait {wait_s * 1000:g} ms, torch threads {threads}; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs"
    )

    with tempfile.TemporaryDirectory(prefix="bx-") as tmp:  # short: Ray's socket paths are limited
        settings = settings_on_free_ports(Path(tmp) / "stack", model_repository=repo, models=[args.model])
        store = LocalDirStore(settings.data_dir / "objects")
        keys = [f"bench/{n}/image.dcm" for n in range(len(dicoms))]
        for key, data in zip(keys, dicoms, strict=True):
            store.put(key, data, "application/dicom")
        stack = Stack(settings)
        t = time.perf_counter()
        state = stack.start(only=["explain"], env={"explain": service_env})
        (pid,) = [c.pid for c in state.components if c.name == "explain" and c.pid is not None]
        print(f"explain service ready in {time.perf_counter() - t:.1f} s")
        url = f"http://127.0.0.1:{settings.explain_port}"
        torch.set_num_threads(threads)  # the replica's engine, threads and store
        engines = EngineSet.load(repo, [args.model], store)
        rows: list[dict[str, Any]] = []
        try:
            warm = keys[:batch]
            asyncio.run(served(url, args.model, manifest.version, warm, concurrency, "warm"))
            in_process(engines, args.model, warm, batch, "warm")
            idle_before, idle_s = service_cpu(pid), 5.0
            time.sleep(idle_s)
            idle = {k: (v - idle_before[k]) / idle_s * 100 for k, v in service_cpu(pid).items()}
            print("idle service, % of one CPU: " + ", ".join(f"{k} {v:.0f}" for k, v in idle.items()))
            for round_no in range(args.rounds):
                before, cpu_before = batch_sizes(scrape(f"{url}/metrics")), service_cpu(pid)
                service_rate, p50 = asyncio.run(
                    served(url, args.model, manifest.version, keys, concurrency, str(round_no))
                )
                after, cpu_after = batch_sizes(scrape(f"{url}/metrics")), service_cpu(pid)
                service_ms = {k: (cpu_after[k] - cpu_before[k]) * 1000 / len(keys) for k in cpu_after}
                loop_rate, steps = in_process(engines, args.model, keys, batch, str(round_no))
                mean_batch = (after[0] - before[0]) / max(1.0, after[1] - before[1])
                rows.append({"service": service_rate, "loop": loop_rate, "cpu": service_ms, "steps": steps})
                print(
                    f"round {round_no + 1}/{args.rounds}: service {service_rate:.1f}/s (p50 {p50:.0f} ms, "
                    f"mean Grad-CAM batch {mean_batch:.1f}), in-process loop {loop_rate:.1f}/s: "
                    f"{service_rate / loop_rate:.2f}x; in-process ms per study: "
                    + ", ".join(f"{step} {ms:.1f}" for step, ms in steps.items())
                    + "; the service's CPU ms per study: "
                    + ", ".join(f"{role} {ms:.1f}" for role, ms in service_ms.items()),
                    flush=True,
                )
        finally:
            stack.stop()

    ratios = [r["service"] / r["loop"] for r in rows]
    print(f"\n=== {len(rows)} rounds, torch threads {threads} on both sides ===")
    print(
        f"service {min(r['service'] for r in rows):.1f}-{max(r['service'] for r in rows):.1f}/s, "
        f"in-process loop {min(r['loop'] for r in rows):.1f}-{max(r['loop'] for r in rows):.1f}/s"
    )
    print(f"service / in-process: {min(ratios):.2f}-{max(ratios):.2f}x (goal >= {GOAL}x)")
    replica = [r["cpu"]["replica"] for r in rows]
    serve = [sum(r["cpu"].values()) - r["cpu"]["replica"] for r in rows]
    loop_cpu = [r["steps"]["CPU"] for r in rows]
    print(
        f"CPU ms per study: in-process {min(loop_cpu):.1f}-{max(loop_cpu):.1f}; service replica "
        f"{min(replica):.1f}-{max(replica):.1f} + proxy, controller and Ray {min(serve):.1f}-{max(serve):.1f}"
    )


if __name__ == "__main__":
    main()
