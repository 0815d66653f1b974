"""Where the time goes: py-spy flame graphs of the gateway, deid and preprocess under
``bench_gateway``'s sync load at concurrency 1 and 16, the CPU each process spends per study, and a
per-stage table of every study's spans from the stack's own trace file.

    .venv/bin/python -m benchmarks.profile_stack                      # 20 s per level
    .venv/bin/python -m benchmarks.profile_stack --seconds 30 --out benchmarks/results/profiles

Writes ``<service>-c<N>.svg`` (py-spy flame graphs, CPU samples at 100 Hz; open in a browser),
``stages.md`` and ``profile.json`` into ``--out``, and prints the tables. Figures, never a pass or
fail. Needs py-spy (in the lock) and permission to ptrace the stack's processes (root or
``kernel.yama.ptrace_scope=0``). A real stack on free ports in a temporary directory (as
``bench_gateway``); the studies are the same synthetic photographs (no explanation requested).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.bench_gateway import REPO, full_speed_stack

PROFILED = ("gateway", "deid", "preprocess")
#: Processes whose CPU counts per study (tritonserver does the model's work).
CPU_COUNTED = ("gateway", "deid", "preprocess", "triton")
PY_SPY = Path(sys.executable).with_name("py-spy")


async def load(url: str, token: str, dicoms: list[bytes], concurrency: int, seconds: float) -> list[float]:
    """Sync submissions at ``concurrency`` for ``seconds``; the latency of each (all must be 200)."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as http:

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                start = time.perf_counter()
                r = await http.post(
                    "/v1/studies",
                    params={"mode": "sync", "explain": "false"},
                    content=dicoms[i % len(dicoms)],
                    headers={"Content-Type": "application/dicom"},
                )
                if r.status_code != 200:
                    raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")
                latencies.append(time.perf_counter() - start)
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (tritonserver's backend stubs)."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (Triton's stubs, Ray's workers), MiB."""
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def stage_table(traces_file: Path, since_ns: int) -> list[dict[str, Any]]:
    """Median and share of each span name over the studies submitted since ``since_ns``.

    A study's trace is the gateway's ``POST /v1/studies`` root and everything under it (deid,
    preprocess, Triton's own spans through the OTLP sink, database and object-store calls).
    """
    spans: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with traces_file.open() as f:
        for line in f:
            span = json.loads(line)
            if int(span["start_ns"]) >= since_ns:
                spans[span["trace_id"]].append(span)
    per_name: dict[str, list[float]] = defaultdict(list)
    roots: list[float] = []
    for trace in spans.values():
        root = next((s for s in trace if s["parent_span_id"] is None and "POST" in s["name"]), None)
        if root is None:
            continue
        roots.append((root["end_ns"] - root["start_ns"]) / 1e6)
        totals: dict[str, float] = defaultdict(float)
        for s in trace:
            if s["name"] != root["name"]:  # the root, and a retried request's server span
                totals[f"{s['service']}: {s['name']}"] += (s["end_ns"] - s["start_ns"]) / 1e6
        for name, ms in totals.items():
            per_name[name].append(ms)
    if not roots:
        return []
    total = statistics.median(roots)
    rows = [{"span": "gateway: request (root)", "studies": len(roots), "median_ms": total, "share": 1.0}]
    for name, values in sorted(per_name.items(), key=lambda kv: -statistics.median(kv[1])):
        median = statistics.median(values)
        rows.append({"span": name, "studies": len(values), "median_ms": median, "share": median / total})
    return rows


#: Leaf frames py-spy samples as running although the thread waits (--nonblocking cannot tell):
#: aiosqlite's worker blocked on its queue, the event loop in its selector, pool threads idle.
IDLE_LEAVES = (
    "_connection_worker_thread (aiosqlite/core.py:59)",
    "Runner.run (asyncio/runners.py:118)",
    "Condition.wait (threading.py",
    "_worker (concurrent/futures/thread.py:81)",
    "process ",
)


def hot_frames(raw: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the share of busy samples by the package of the running
    frame, and the first-party functions (``sightline_*``) most often on the stack."""
    packages: dict[str, int] = defaultdict(int)
    ours: dict[str, int] = defaultdict(int)
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1].startswith(IDLE_LEAVES):
            continue
        n = int(count)
        busy += n
        leaf = frames[-1].split(" (")[-1]
        packages[leaf.split("/")[0] if "/" in leaf else leaf.split(":")[0]] += n
        seen = set()
        for frame in frames:
            name, _, where = frame.partition(" (")
            path = where.split(":")[0]
            if path.startswith("sightline_") and "__main__" not in path and (name, path) not in seen:
                seen.add((name, path))
                ours[f"{name} ({path})"] += n
    share = max(1, busy)
    return {
        "busy_samples": busy,
        "packages": {k: v / share for k, v in sorted(packages.items(), key=lambda kv: -kv[1])[:8]},
        "functions": {k: v / share for k, v in sorted(ours.items(), key=lambda kv: -kv[1])[:top]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="load (and profile) per level")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "profiles")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--workers", type=int, default=4, help="the gateway's worker concurrency")
    args = parser.parse_args()
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy not found at {PY_SPY}: run `make install`")
    args.out.mkdir(parents=True, exist_ok=True)

    from sightline_gateway.core.auth import mint_dev_token

    from sightline.stack import Stack
    from tests.unit.gateway.gateway_fixtures import phi_dicom

    dicoms = [phi_dicom(rows=150, cols=200, seed=i) for i in range(8)]
    report: dict[str, Any] = {"levels": []}
    with tempfile.TemporaryDirectory(prefix="sightline-profile-") as tmp:
        settings = full_speed_stack(Path(tmp), gateway_worker_concurrency=args.workers)
        stack = Stack(settings)
        state = stack.start()
        try:
            pids = {c.name: c.pid for c in state.components if c.pid is not None}
            secret = json.loads((Path(tmp) / "secrets.json").read_text())["jwt_secret"]
            token = mint_dev_token(secret, "sightline-dev", "sightline", "profile", ["submitter"], 3600)
            url = f"http://127.0.0.1:{settings.gateway_port}"
            asyncio.run(load(url, token, dicoms, 1, 3.0))  # warm-up: models loaded, pools open
            time.sleep(2)
            report["rss_mb_idle"] = {n: rss_mb(p) for n, p in pids.items()}
            studies = 0
            for concurrency in args.concurrency:
                since = time.time_ns()
                cpu_before = {n: cpu_seconds(pids[n]) for n in CPU_COUNTED if n in pids}
                spies = [
                    subprocess.Popen(
                        [
                            str(PY_SPY),
                            "record",
                            "--pid",
                            str(pids[name]),
                            "--rate",
                            "100",
                            "--duration",
                            str(int(args.seconds)),
                            "--nonblocking",
                            "--subprocesses",
                            "--format",
                            fmt,
                            "--output",
                            str(args.out / f"{name}-c{concurrency}.{ext}"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for name in PROFILED
                    if name in pids
                    for fmt, ext in (("flamegraph", "svg"), ("raw", "txt"))
                ]
                latencies = asyncio.run(load(url, token, dicoms, concurrency, args.seconds))
                cpu = {n: cpu_seconds(pids[n]) - before for n, before in cpu_before.items()}
                for spy in spies:
                    _, err = spy.communicate(timeout=60)
                    if spy.returncode:
                        print(f"py-spy failed: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
                time.sleep(2)  # the span processors flush
                n = len(latencies)
                latencies.sort()
                level = {
                    "concurrency": concurrency,
                    "studies": n,
                    "per_s": n / args.seconds,
                    "p50_ms": 1000 * statistics.median(latencies),
                    "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))],
                    "cpu_ms_per_study": {k: 1000 * v / max(1, n) for k, v in cpu.items()},
                    "stages": stage_table(settings.data_dir / "traces.jsonl", since),
                    "hot": {
                        name: hot_frames(args.out / f"{name}-c{concurrency}.txt")
                        for name in PROFILED
                        if (args.out / f"{name}-c{concurrency}.txt").exists()
                    },
                }
                report["levels"].append(level)
                print_level(level)
                studies += n
            report["rss_mb_after"] = {n: rss_mb(p) for n, p in pids.items()}
            report["studies"] = studies
            print_rss(report)
        finally:
            stack.stop()
    (args.out / "profile.json").write_text(json.dumps(report, indent=2))
    (args.out / "stages.md").write_text(
        "\n\n".join([*(markdown(level) for level in report["levels"]), rss_markdown(report)]) + "\n"
    )
    print(f"\nflame graphs, stages.md and profile.json in {args.out}")


def markdown(level: dict[str, Any]) -> str:
    cpu = ", ".join(f"{k} {v:.1f} ms" for k, v in level["cpu_ms_per_study"].items())
    lines = [
        f"### Concurrency {level['concurrency']}: {level['per_s']:.1f} studies/s, p50 "
        f"{level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms ({level['studies']} studies)",
        "",
        f"CPU per study: {cpu}",
        "",
        "| span (service: name), summed per study | studies | median ms | of the request |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['span']} | {r['studies']} | {r['median_ms']:.2f} | {100 * r['share']:.0f}% |"
        for r in level["stages"]
    ]
    return "\n".join(lines)


def rss_markdown(report: dict[str, Any]) -> str:
    after = report.get("rss_mb_after", {})
    lines = [
        "### Resident memory (MiB, process and its children): idle after warm-up, after "
        f"{report.get('studies', 0)} studies",
        "",
        "| component | idle | after | growth |",
        "|---|---|---|---|",
    ]
    for name, idle in report.get("rss_mb_idle", {}).items():
        end = after.get(name, float("nan"))
        lines.append(f"| {name} | {idle:.0f} | {end:.0f} | {100 * (end - idle) / idle:+.1f}% |")
    return "\n".join(lines)


def print_rss(report: dict[str, Any]) -> None:
    print("\n" + rss_markdown(report), flush=True)


def print_level(level: dict[str, Any]) -> None:
    print("\n" + markdown(level), flush=True)


if __name__ == "__main__":
    main()
