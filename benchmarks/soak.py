"""Soak: the stack under steady load for N minutes; prints what drifts (issue 13).

First measures the maximum studies/s of the mix (closed loop, ``--calibrate-s``), then offers
80% of it (open loop) for ``--minutes``: studies cycle through sync/async x with/without
explanation, each with its own Idempotency-Key, through the hospital client of tests/chaos. Per
minute it prints errors, p50/p99 latency, the job backlog and the gateway's RSS; at the end each
component's RSS at start, after warm-up (``--warmup-minutes``) and at the end, its growth after
warm-up and its slope over the second half (a leak keeps climbing; a high-water mark does not),
open files and the database's size. Figures only; it never fails on timing. Goals (README):
0 errors, p99 of the last 5 minutes within 1.2x of the first 5, RSS growth <= 5% after warm-up.

    .venv/bin/python -m benchmarks.soak                      # 30 minutes, own stack on free ports
    .venv/bin/python -m benchmarks.soak --minutes 2 --calibrate-s 15 --json soak.json
    .venv/bin/python -m benchmarks.soak --data-dir var/stack # against a running `sightline up`
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MIX = [(False, False), (True, False), (False, True), (True, True)]  # (sync, explain)
#: Open-loop load never holds more studies than this in flight; beyond, a study counts as shed.
MAX_IN_FLIGHT = 64


@dataclass
class Minute:
    submitted: int = 0
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    backlog: int | None = None
    #: RSS (KiB) per component when the minute closed.
    rss_kib: dict[str, int] = field(default_factory=dict)
    #: The gateway's resident memory by kind of mapping (KiB) and its thread count, same moment.
    gateway_memory: dict[str, int] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Soak:
    """Drives the load against one stack and samples its processes and database."""

    def __init__(self, data_dir: Path, url: str, tenant: str = "soak", stack_id: str | None = None) -> None:
        from tests.chaos.client import HospitalClient
        from tests.unit.gateway.gateway_fixtures import phi_dicom

        self.data_dir, self.tenant, self.stack_id = data_dir, tenant, stack_id
        secret = json.loads((data_dir / "secrets.json").read_text())["jwt_secret"]
        # One client (and rate-limit bucket) per concurrent caller, as a hospital's several systems.
        self.clients = [HospitalClient(url, self._token(secret, f"soak-{i}")) for i in range(16)]
        self.bodies = [phi_dicom(rows=96, cols=128, seed=i) for i in range(8)]
        self.counter = itertools.count()
        self.run_id = os.urandom(4).hex()

    def _token(self, secret: str, subject: str) -> str:
        from sightline_gateway.core.auth import mint_dev_token

        return mint_dev_token(
            secret, "sightline-dev", "sightline", self.tenant, ["submitter"], 24 * 3600, subject
        )

    async def one(self, minute: Minute | None) -> bool:
        """One study of the mix, submitted and followed to its end; True when it completed."""
        from tests.chaos.client import Study

        n = next(self.counter)
        sync, explain = MIX[n % len(MIX)]
        client = self.clients[n % len(self.clients)]
        study = Study(key=f"soak-{self.run_id}-{n}", explain=explain, sync=sync)
        try:
            await client.submit(study, self.bodies[n % len(self.bodies)])
            if study.status != "completed":
                await client.follow([study], deadline=time.monotonic() + 300, interval_s=0.5)
        except Exception as exc:  # noqa: BLE001 - every failure is a figure of the soak
            study.status, study.error = "error", {"detail": type(exc).__name__}
        ok = study.status == "completed" and (not explain or study.heatmap)
        if minute is not None:
            minute.completed += ok
            if ok and study.latency_s is not None:
                minute.latencies.append(study.latency_s)
            elif not ok:
                reason = (study.error or {}).get("detail") or (
                    "no heatmap" if study.status == "completed" else study.status
                )
                minute.errors[str(reason)[:60]] += 1
        return ok

    async def calibrate(self, seconds: float, concurrency: int = 8) -> float:
        """Maximum studies/s of the mix: closed loop at ``concurrency`` for ``seconds``."""
        done = 0
        end = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                # Await first: ``done += await ...`` reads ``done`` before the await and writes back a
                # stale sum, so concurrent loops lost each other's studies (0.68/s measured, not 5.4).
                ok = await self.one(None)
                done += ok

        start = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / (time.monotonic() - start)

    async def offer(self, rate: float, minutes: float) -> list[Minute]:
        """Open loop: one study every 1/rate s for ``minutes``; per-minute figures, printed as they close."""
        per_minute: defaultdict[int, Minute] = defaultdict(Minute)
        tasks: set[asyncio.Task[bool]] = set()
        start = time.monotonic()
        end = start + minutes * 60
        printed = 0
        next_at = start
        while time.monotonic() < end:
            index = int((time.monotonic() - start) // 60)
            minute = per_minute[index]
            if len(tasks) >= MAX_IN_FLIGHT:
                minute.errors["shed: too many in flight"] += 1
            else:
                minute.submitted += 1
                task = asyncio.create_task(self.one(minute))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            next_at += 1 / rate
            while printed < index:
                self.close_minute(per_minute[printed])
                print_minute(printed, per_minute[printed])
                printed += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if tasks:
            await asyncio.wait(tasks, timeout=300)
        for index in range(printed, int(minutes * 60 // 60) + (1 if minutes * 60 % 60 else 0)):
            self.close_minute(per_minute[index])
            print_minute(index, per_minute[index])
        return [per_minute[i] for i in sorted(per_minute)]

    def close_minute(self, minute: Minute) -> None:
        """What is sampled once a minute: the job backlog and each component's RSS."""
        minute.backlog = self.backlog()
        if self.stack_id is not None:
            sample = processes(self.stack_id, self.data_dir / "stack.json")
            minute.rss_kib = {name: row["rss_kib"] for name, row in sample.items()}
            minute.gateway_memory = sample.get("gateway", {}).get("memory", {})

    def backlog(self) -> int:
        """Jobs queued or running now."""
        path = self.data_dir / "sightline.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return int(
                db.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
            )

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def print_minute(index: int, m: Minute) -> None:
    print(
        f"minute {index + 1:3d}: submitted {m.submitted:5d}  ok {m.completed:5d}"
        f"  errors {sum(m.errors.values()):3d}  p50 {percentile(m.latencies, 0.5) * 1000:8.0f} ms"
        f"  p99 {percentile(m.latencies, 0.99) * 1000:8.0f} ms"
        f"  backlog {m.backlog}"
        + (f"  gateway {m.rss_kib['gateway'] / 1024:.0f} MB" if "gateway" in m.rss_kib else "")
        + (
            " (heap {heap} anon {anon} file {file} MB, {threads} threads)".format(
                **{k: (v if k == "threads" else round(v / 1024)) for k, v in m.gateway_memory.items()}
            )
            if m.gateway_memory
            else ""
        )
        + (f"  {dict(m.errors)}" if m.errors else ""),
        flush=True,
    )


def memory_kinds(pid: int) -> dict[str, int]:
    """Resident KiB of one process by kind of mapping, from /proc/PID/smaps, and its threads.

    ``heap``: glibc's main arena (``[heap]``); ``anon``: every other anonymous mapping (the arenas
    glibc gives other threads, Python's object arenas, large buffers); ``file``: mapped files
    (code, shared libraries). Where a process grows tells a fragmenting allocator from a cache.
    """
    kinds = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=6)
        if not line[:1].isupper():  # a mapping's header: address range, perms, offset, dev, inode, path
            path = head[5] if len(head) > 5 else ""
            kind = "heap" if path == "[heap]" else "file" if path.startswith("/") else "anon"
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    threads = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Threads:")
    )
    return {**kinds, "threads": threads}


def processes(stack_id: str, state_file: Path) -> dict[str, dict[str, Any]]:
    """RSS (KiB), open files and process count per component (its process group; Ray daemons apart);
    for the gateway also its memory by kind (:func:`memory_kinds`)."""
    from sightline.stack import StackState, tagged_processes

    groups = {c.pid: c.name for c in StackState.load(state_file).components if c.pid}
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"rss_kib": 0, "open_files": 0, "processes": 0})
    for pid in tagged_processes(stack_id):
        try:
            name = groups.get(os.getpgid(pid), "ray daemons")
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            memory = memory_kinds(pid) if name == "gateway" else None
        except (OSError, StopIteration):
            continue
        row = out[name]
        if memory is not None:
            row["memory"] = memory
        row["rss_kib"] += rss
        row["open_files"] += fds
        row["processes"] += 1
    return dict(out)


def db_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("sightline.db*"))


def slope_mb_per_10min(series: list[int]) -> float:
    """Least-squares slope of per-minute RSS samples (KiB), in MB per 10 minutes."""
    n = len(series)
    if n < 2:
        return float("nan")
    mean_x, mean_y = (n - 1) / 2, sum(series) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(series))
    den = sum((x - mean_x) ** 2 for x in range(n))
    return num / den * 10 / 1024


def rss_figures(start: dict[str, Any], end: dict[str, Any], minutes: list[Minute], warmup: int) -> dict:
    """Per component: RSS at start, after warm-up and at the end (MB), growth after warm-up (%),
    and the slope over the second half of the run (MB per 10 min)."""
    figures = {}
    for name in sorted(set(start["processes"]) | set(end["processes"])):
        series = [m.rss_kib[name] for m in minutes if name in m.rss_kib]
        first = start["processes"].get(name, {}).get("rss_kib", 0)
        last = end["processes"].get(name, {}).get("rss_kib", 0)
        # Warm-up ends with the minute ``warmup`` (clamped for short runs: then its first sample).
        base = series[min(warmup, len(series)) - 1] if series and warmup > 0 else first
        figures[name] = {
            "start_mb": first / 1024,
            "after_warmup_mb": base / 1024,
            "end_mb": last / 1024,
            "growth_after_warmup_pct": (last / base - 1) * 100 if base else float("nan"),
            "slope_second_half_mb_per_10min": slope_mb_per_10min(series[len(series) // 2 :]),
            "open_files_start": start["processes"].get(name, {}).get("open_files", 0),
            "open_files_end": end["processes"].get(name, {}).get("open_files", 0),
        }
    return figures


def report(
    start: dict[str, Any],
    end: dict[str, Any],
    minutes: list[Minute],
    rate: float,
    max_rate: float,
    warmup: int = 5,
) -> dict:
    print(f"\nmax {max_rate:.2f} studies/s (calibration); offered {rate:.2f} studies/s")
    rss = rss_figures(start, end, minutes, warmup)
    print(
        f"{'component':14s} {'RSS start':>10s} {f'min {warmup}':>10s} {'RSS end':>10s} {'growth':>7s}"
        f" {'slope/10min':>11s} {'files start':>11s} {'files end':>9s}"
    )
    for name, f in rss.items():
        print(
            f"{name:14s} {f['start_mb']:8.0f}MB {f['after_warmup_mb']:8.0f}MB {f['end_mb']:8.0f}MB"
            f" {f['growth_after_warmup_pct']:6.1f}% {f['slope_second_half_mb_per_10min']:8.1f}MB"
            f" {f['open_files_start']:11d} {f['open_files_end']:9d}"
        )
    print(f"database {start['db_bytes'] / 1e6:.1f} MB -> {end['db_bytes'] / 1e6:.1f} MB")
    errors = sum(sum(m.errors.values()) for m in minutes)
    first, last = minutes[: min(5, len(minutes))], minutes[-min(5, len(minutes)) :]
    p99 = [percentile([x for m in part for x in m.latencies], 0.99) for part in (first, last)]
    print(
        f"errors {errors}; p99 first {p99[0] * 1000:.0f} ms, last {p99[1] * 1000:.0f} ms"
        f" ({p99[1] / p99[0]:.2f}x)"
    )
    return {
        "max_per_s": max_rate,
        "offered_per_s": rate,
        "errors": errors,
        "warmup_minutes": warmup,
        "rss": rss,
        "minutes": [
            {
                "submitted": m.submitted,
                "completed": m.completed,
                "errors": dict(m.errors),
                "p50_ms": percentile(m.latencies, 0.5) * 1000,
                "p99_ms": percentile(m.latencies, 0.99) * 1000,
                "backlog": m.backlog,
                "rss_kib": m.rss_kib,
                "gateway_memory_kib": m.gateway_memory,
            }
            for m in minutes
        ],
        "start": start,
        "end": end,
    }


def snapshot(stack_id: str, data_dir: Path) -> dict[str, Any]:
    return {"processes": processes(stack_id, data_dir / "stack.json"), "db_bytes": db_bytes(data_dir)}


async def soak(data_dir: Path, url: str, stack_id: str, args: argparse.Namespace) -> dict:
    load = Soak(data_dir, url, stack_id=stack_id)
    try:
        for _ in MIX:  # warm-up: the first explanation loads the model into Ray Serve's replica
            await load.one(None)
        max_rate = await load.calibrate(args.calibrate_s)
        rate = max(0.05, args.load * max_rate)
        print(f"max {max_rate:.2f} studies/s; offering {rate:.2f}/s for {args.minutes} min", flush=True)
        start = snapshot(stack_id, data_dir)
        minutes = await load.offer(rate, args.minutes)
        end = snapshot(stack_id, data_dir)
    finally:
        await load.aclose()
    return report(start, end, minutes, rate, max_rate, args.warmup_minutes)


def _stop_on_signal(sig: int, _frame: object) -> None:
    for other in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the cleanup short
        signal.signal(other, signal.SIG_IGN)
    raise SystemExit(128 + sig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--calibrate-s", type=float, default=60.0, help="closed-loop run measuring the maximum"
    )
    parser.add_argument(
        "--warmup-minutes", type=int, default=5, help="RSS growth is measured from the end of this minute"
    )
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured maximum offered")
    parser.add_argument("--data-dir", type=Path, help="a running stack's data directory (default: start one)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="COMPONENT:KEY=VALUE",
        help="extra environment for one component of the stack it starts (repeatable)",
    )
    args = parser.parse_args()
    env: dict[str, dict[str, str]] = defaultdict(dict)
    for item in args.env:
        component, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (sep and eq and key):
            parser.error(f"--env {item!r}: expected COMPONENT:KEY=VALUE")
        env[component][key] = value
    if env and args.data_dir:
        parser.error("--env applies to a stack the soak starts, not to --data-dir")

    from sightline.stack import Stack, StackSettings, StackState, settings_on_free_ports

    # Ctrl-C or SIGTERM ends the run through the `finally` below, which stops the stack it started
    # (a plain SIGTERM used to leave every component running).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_on_signal)

    if args.data_dir:
        settings = StackSettings(data_dir=args.data_dir)
        state = StackState.load(settings.state_file)
        figures = asyncio.run(
            soak(args.data_dir, f"http://{settings.host}:{settings.gateway_port}", state.stack_id, args)
        )
    else:
        with tempfile.TemporaryDirectory(prefix="sightline-soak-") as tmp:
            settings = settings_on_free_ports(Path(tmp), model_repository=REPO / "model_repository")
            stack = Stack(settings)
            state = stack.start(env=env)
            extra = f"; extra environment {dict(env)}" if env else ""
            print(f"stack id {state.stack_id}{extra}", flush=True)
            try:
                url = f"http://{settings.host}:{settings.gateway_port}"
                figures = asyncio.run(soak(Path(tmp), url, state.stack_id, args))
            finally:
                stack.stop()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
