"""The profiler's summaries (benchmarks/profile_stack.py): the per-stage table from a trace file and
the busy frames from py-spy's collapsed stacks. The figures themselves are measured, not tested."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.profile_stack import hot_frames, stage_table


def _span(trace: str, span: str, parent: str | None, name: str, service: str, start: int, ms: float) -> dict:
    return {
        "trace_id": trace,
        "span_id": span,
        "parent_span_id": parent,
        "name": name,
        "service": service,
        "start_ns": start,
        "end_ns": start + int(ms * 1e6),
    }


def test_stage_table_sums_each_span_name_per_study_and_takes_the_median(tmp_path: Path) -> None:
    spans = []
    for i, (deid, sql) in enumerate([(10.0, 1.0), (12.0, 2.0), (30.0, 3.0)]):
        t = f"t{i}"
        spans += [
            _span(t, "a", None, "POST /v1/studies", "gateway", 1000, 50.0),
            _span(t, "b", "a", "POST /v1/deidentify", "deid", 1100, deid),
            _span(t, "c", "a", "SELECT db", "gateway", 1200, sql),
            _span(t, "d", "a", "SELECT db", "gateway", 1300, sql),  # two statements: summed
        ]
    spans.append(_span("old", "x", None, "POST /v1/studies", "gateway", 10, 999.0))  # before the level
    spans.append(_span("probe", "y", None, "GET /health/ready", "gateway", 2000, 1.0))  # not a study
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in spans))
    rows = {r["span"]: r for r in stage_table(path, since_ns=1000)}
    assert rows["gateway: request (root)"]["studies"] == 3
    assert rows["gateway: request (root)"]["median_ms"] == 50.0
    assert rows["deid: POST /v1/deidentify"]["median_ms"] == 12.0
    assert rows["gateway: SELECT db"]["median_ms"] == 4.0
    assert abs(rows["gateway: SELECT db"]["share"] - 0.08) < 1e-9


def test_hot_frames_leave_out_waiting_threads_and_count_our_functions(tmp_path: Path) -> None:
    raw = tmp_path / "gateway.txt"
    raw.write_text(
        'process 1:"python -m sightline_gateway";main (sightline_gateway/__main__.py:17);'
        "submit (sightline_gateway/api/routes/studies.py:40);execute (sqlalchemy/engine/base.py:9) 30\n"
        'process 1:"python -m sightline_gateway";main (sightline_gateway/__main__.py:17);'
        "submit (sightline_gateway/api/routes/studies.py:40);dumps (json/encoder.py:3) 10\n"
        'process 1:"python -m sightline_gateway";Thread.run (threading.py:982);'
        "_connection_worker_thread (aiosqlite/core.py:59) 500\n"
    )
    hot = hot_frames(raw)
    assert hot["busy_samples"] == 40  # the aiosqlite thread blocked on its queue is not busy
    assert hot["packages"] == {"sqlalchemy": 0.75, "json": 0.25}
    assert hot["functions"] == {"submit (sightline_gateway/api/routes/studies.py)": 1.0}
