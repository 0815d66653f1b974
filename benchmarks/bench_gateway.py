"""Studies per second and p50/p99 latency through the gateway (sync mode) at concurrency 1, 4 and
16, with and without explanation, beside the bare model (Triton gRPC) and preprocess (gRPC) in
the same run. Prints figures; never fails on timing.

    .venv/bin/python -m benchmarks.bench_gateway                 # a stack on free ports in a temp dir
    .venv/bin/python -m benchmarks.bench_gateway --requests 40   # more requests per level
    .venv/bin/python -m benchmarks.bench_gateway --paths preprocess gateway --sync-direct-jobs 0
                                                                 # the gateway with every sync study queued
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:
    from sightline.stack import StackSettings

REPO = Path(__file__).resolve().parents[1]


def full_speed_stack(data_dir: Path, **overrides: Any) -> StackSettings:
    """A stack on free loopback ports in ``data_dir`` serving the repository's models, whose
    gateway lets one client submit at full speed (the per-client 600/min would answer 429)."""
    from sightline.stack import settings_on_free_ports

    return settings_on_free_ports(
        data_dir,
        model_repository=REPO / "model_repository",
        gateway_rate_limit_per_minute=1_000_000,
        gateway_rate_limit_burst=10_000,
        **overrides,
    )


async def measure(
    call: Callable[[int], Awaitable[None]], concurrency: int, requests: int
) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    await call(-1)  # warm-up
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000,
    }


PATHS = {
    "bare": "bare model (Triton gRPC)",
    "preprocess": "preprocess + model (gRPC)",
    "gateway": "gateway, no explanation",
    "gateway-explain": "gateway, with explanation",
}


async def run(
    url: str, token: str, triton_grpc: str, preprocess_grpc: str, requests: int, paths: list[str]
) -> list[dict]:
    from tritonclient.grpc import aio as grpcclient

    from tests.unit.gateway.gateway_fixtures import phi_dicom

    dicoms = [phi_dicom(rows=150, cols=200, seed=i) for i in range(8)]
    rows: list[dict] = []

    triton = grpcclient.InferenceServerClient(triton_grpc)
    meta = await triton.get_model_metadata("derm-cnn", as_json=True)
    tin = meta["inputs"][0]
    shape = [1, *[int(d) for d in tin["shape"][1:]]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    async def bare(_: int) -> None:
        t = grpcclient.InferInput(tin["name"], shape, tin["datatype"])
        t.set_data_from_numpy(x)
        await triton.infer("derm-cnn", [t])

    pre = grpcclient.InferenceServerClient(preprocess_grpc)

    async def preprocess(i: int) -> None:
        t = grpcclient.InferInput("dicom", [1], "BYTES")
        t.set_data_from_numpy(np.array([dicoms[i % len(dicoms)]], dtype=np.object_))
        await pre.infer("derm-cnn", [t])

    http = httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=300,
        limits=httpx.Limits(max_connections=64),
    )

    def gateway(explain: bool) -> Callable[[int], Awaitable[None]]:
        async def call(i: int) -> None:
            r = await http.post(
                "/v1/studies",
                params={"mode": "sync", "explain": str(explain).lower()},
                content=dicoms[i % len(dicoms)],
                headers={"Content-Type": "application/dicom"},
            )
            if r.status_code != 200:
                raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")

        return call

    calls = {
        "bare": bare,
        "preprocess": preprocess,
        "gateway": gateway(False),
        "gateway-explain": gateway(True),
    }
    targets = [(PATHS[p], calls[p]) for p in PATHS if p in paths]
    for name, call in targets:
        for concurrency in (1, 4, 16):
            n = requests if "gateway" in name else requests * 4
            figures = await measure(call, concurrency, max(n, concurrency))
            rows.append(
                {"path": name, "concurrency": concurrency, **{k: round(v, 2) for k, v in figures.items()}}
            )
            print(
                f"{name:28s} c={concurrency:<3d} {figures['per_s']:8.2f}/s  p50 {figures['p50_ms']:8.1f} ms  "
                f"p99 {figures['p99_ms']:8.1f} ms",
                flush=True,
            )
    await http.aclose()
    await triton.close()
    await pre.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--requests", type=int, default=24, help="studies per gateway level (x4 for the model)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--paths", nargs="+", choices=list(PATHS), default=list(PATHS), help="what to measure"
    )
    parser.add_argument(
        "--sync-direct-jobs",
        type=int,
        default=None,
        help="the gateway's SIGHTLINE_GATEWAY_SYNC_DIRECT_JOBS (0: every sync study through the queue)",
    )
    args = parser.parse_args()

    from sightline_gateway.core.auth import mint_dev_token

    from sightline.stack import Stack

    with tempfile.TemporaryDirectory(prefix="sightline-bench-") as tmp:
        overrides = (
            {} if args.sync_direct_jobs is None else {"gateway_sync_direct_jobs": args.sync_direct_jobs}
        )
        settings = full_speed_stack(Path(tmp), **overrides)
        stack = Stack(settings)
        started = time.perf_counter()
        stack.start()
        print(f"stack ready in {time.perf_counter() - started:.1f} s (every component)", flush=True)
        try:
            secret = json.loads((Path(tmp) / "secrets.json").read_text())["jwt_secret"]
            token = mint_dev_token(secret, "sightline-dev", "sightline", "bench", ["submitter"], 3600)
            rows = asyncio.run(
                run(
                    f"http://127.0.0.1:{settings.gateway_port}",
                    token,
                    f"127.0.0.1:{settings.triton_grpc_port}",
                    f"127.0.0.1:{settings.preprocess_grpc_port}",
                    args.requests,
                    args.paths,
                )
            )
        finally:
            stack.stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
