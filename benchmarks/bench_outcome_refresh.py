"""Benchmark: one real-world-metrics refresh, its time and memory (issue 13's gateway drift).

The gateway recomputes its outcome gauges every ``outcome_metrics_interval_s`` over its window
(90 days by default). This fills a SQLite database with ``--results`` results shaped like the
stack's (instances with image statistics, an explanation), ``--outcome-share`` of them with a
confirmed outcome, and times both ways of reading the window, each followed by ``publish``:

- *every case* (``load_cases`` then ``summarise``: every result of the window as a case, what the
  refresh did before), and
- *window read* (``load_window``: counts by the database, only the results with an outcome loaded;
  what the refresh does now).

Printed per way: wall and CPU seconds of one refresh (best of ``--repeat``), and the peak Python
memory of one as ``tracemalloc`` counts it (repeatable from run to run, not RSS). The CPU time is
spent on the gateway's event loop thread: a refresh that grows with the window delays every
request in flight once a minute.

Then, on the gateway's own engine (``make_engine``: SQLite with its pool), the process's RSS after
the window read has run on 1, 2, 4, 8 and 15 pooled connections at once, twice each: every
connection that scans the table keeps its own SQLite page cache (2 MB by default), so RSS steps up
as more of the pool has scanned and stays there (a bounded cache, not a leak). Figures only; it
never fails on them.

Run from the repository root: ``.venv/bin/python -m benchmarks.bench_outcome_refresh --results 20000``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any


async def fill(sessions: Any, results: int, outcome_share: float) -> None:
    from sightline_gateway.db.models import Outcome, Result, utcnow

    now = utcnow()
    every = max(1, round(1 / outcome_share)) if outcome_share > 0 else 0
    async with sessions() as session:
        for i in range(results):
            study_id = str(uuid.uuid4())
            session.add(
                Result(
                    id=str(uuid.uuid4()),
                    study_id=study_id,
                    tenant_id="bench",
                    model_name="derm-cnn",
                    model_version=1,
                    model_sha256="0" * 64,
                    placeholder=False,
                    probability=(i % 100) / 100,
                    threshold=0.15,
                    refer=i % 100 >= 15,
                    instances=[
                        {
                            "sop_instance_uid": f"2.25.{10**20 + i}",
                            "probability": 0.3,
                            "image_stats": {f"stat_{k}": 0.5 for k in range(12)},
                        }
                    ],
                    explanation={
                        "status": "available",
                        "heatmap_key": "results/bench/" + "x" * 40,
                        "overlay_key": "results/bench/" + "y" * 40,
                        "peak": {"row": 0.5, "col": 0.5},
                        "model_sha256": "0" * 64,
                    },
                    trace_id="0" * 32,
                    created_at=now - timedelta(minutes=i % 600, days=i % 80),
                )
            )
            if every and i % every == 0:
                session.add(
                    Outcome(
                        id=str(uuid.uuid4()),
                        study_id=study_id,
                        tenant_id="bench",
                        model_name="derm-cnn",
                        model_version=1,
                        code_system="snomed",
                        code="372244006",
                        label="malignant",
                        positive=i % 3 == 0,
                        method="histopathology",
                        diagnosed_on=date(2026, 11, 2),
                        source="api",
                        reported_by="bench",
                    )
                )
        await session.commit()


async def measure(refresh: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, float, float, int]:
    """(best wall s, best CPU s, peak MB, groups) of ``refresh``."""
    walls, cpus = [], []
    groups = 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        groups = await refresh()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    tracemalloc.start()
    await refresh()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return min(walls), min(cpus), peak / 1e6, groups


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def page_caches(path: Path, since: datetime, until: datetime, due_before: datetime) -> None:
    """RSS after the window read on more and more pooled connections at once (module text)."""
    from sightline_gateway.db.engine import make_engine, make_sessions
    from sightline_gateway.db.outcomes import load_window

    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    sessions = make_sessions(engine)
    print(f"  RSS {rss_mb():.0f} MB with the gateway's engine open; the window read at once on:")
    for k in (1, 2, 4, 8, 15):
        for attempt in (1, 2):
            await asyncio.gather(*(load_window(sessions, since, until, due_before) for _ in range(k)))
            print(f"    {k:2d} connection(s), {attempt}: RSS {rss_mb():.0f} MB", flush=True)
    await engine.dispose()


async def run(results: int, outcome_share: float, repeat: int) -> None:
    from sightline_gateway.core.monitoring import publish
    from sightline_gateway.core.performance import summarise
    from sightline_gateway.db.models import Base, utcnow
    from sightline_gateway.db.outcomes import load_cases, load_window
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    with tempfile.TemporaryDirectory(prefix="sightline-bench-") as tmp:
        engine = create_async_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        await fill(sessions, results, outcome_share)
        now = utcnow() + timedelta(seconds=1)
        since, due_before = now - timedelta(days=90), now - timedelta(days=14)

        async def every_case() -> int:
            return publish(summarise(await load_cases(sessions, since, now), due_before))

        async def window_read() -> int:
            return publish(await load_window(sessions, since, now, due_before))

        print(f"{results} results in the window, {outcome_share:.0%} with an outcome; best of {repeat}")
        for name, refresh in (("every case", every_case), ("window read", window_read)):
            wall, cpu, peak, groups = await measure(refresh, repeat)
            print(
                f"  {name:<12} {1000 * wall:7.0f} ms wall, {1000 * cpu:7.0f} ms CPU, peak {peak:6.1f} MB"
                f" ({peak * 1e3 / results:.2f} KB per result), {groups} group(s)",
                flush=True,
            )
        await engine.dispose()
        await page_caches(Path(tmp) / "bench.db", since, now, due_before)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=20000, help="results in the refresh's window")
    parser.add_argument("--outcome-share", type=float, default=0.1, help="share of results with an outcome")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.results, args.outcome_share, args.repeat))


if __name__ == "__main__":
    main()
