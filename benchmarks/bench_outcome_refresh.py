"""Benchmark: memory of one real-world-metrics refresh (issue 13's gateway RSS growth).

The gateway recomputes its outcome gauges every ``outcome_metrics_interval_s`` from every result of
its window (``load_cases``). This fills a SQLite database with ``--results`` results shaped like
the stack's (instances with image statistics, an explanation) and prints the peak and the held
memory of one ``load_cases`` call as ``tracemalloc`` counts them: Python allocations, repeatable
from run to run, not RSS. Figures only; it never fails on them.

Run from the repository root: ``.venv/bin/python -m benchmarks.bench_outcome_refresh --results 5000``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path


async def measure(results: int) -> tuple[int, float, float]:
    from sightline_gateway.db.models import Base, Result, utcnow
    from sightline_gateway.db.outcomes import load_cases
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    with tempfile.TemporaryDirectory(prefix="sightline-bench-") as tmp:
        engine = create_async_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        now = utcnow()
        async with sessions() as session:
            for i in range(results):
                session.add(
                    Result(
                        id=str(uuid.uuid4()),
                        study_id=str(uuid.uuid4()),
                        tenant_id="bench",
                        model_name="derm-cnn",
                        model_version=1,
                        model_sha256="0" * 64,
                        placeholder=False,
                        probability=0.3,
                        threshold=0.15,
                        refer=True,
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
                        created_at=now - timedelta(minutes=i % 600),
                    )
                )
            await session.commit()
        tracemalloc.start()
        cases = await load_cases(sessions, now - timedelta(days=90), now + timedelta(seconds=1))
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await engine.dispose()
    return len(cases), peak / 1e6, held / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=int, default=5000, help="results in the refresh's window")
    args = parser.parse_args()
    n, peak, held = asyncio.run(measure(args.results))
    print(
        f"{n} results: peak {peak:.1f} MB during one refresh ({peak * 1e3 / n:.2f} KB per result),"
        f" {held:.1f} MB held after"
    )


if __name__ == "__main__":
    main()
