"""The soak benchmark runs end to end in a short version: a check of the harness, not of timing.

`benchmarks/soak.py` runs for 30 minutes by default (figures in the README); here for 1.5
minutes after a 15 s calibration, to show that it drives the mix and prints every figure it
promises: errors and p50/p99 per minute, RSS and open files per component, the database's size
and the job backlog.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sightline.stack import tagged_processes
from tests.conftest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COMPONENTS = {"triton", "preprocess", "deid", "explain", "gateway"}


def test_soak_harness_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--minutes",
            "1.5",
            "--calibrate-s",
            "15",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=REPO,
    )
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    figures = json.loads(out.read_text())
    assert figures["max_per_s"] > 0 and 0 < figures["offered_per_s"] <= figures["max_per_s"]
    minutes = figures["minutes"]
    assert len(minutes) == 2, minutes
    assert sum(m["completed"] for m in minutes) > 0, "the soak completed no study"
    assert all(m["backlog"] is not None for m in minutes)
    # RSS is sampled every minute, so a leak can be told from a high-water mark after warm-up.
    assert all(COMPONENTS <= m["rss_kib"].keys() for m in minutes), minutes
    assert all(m["rss_kib"][c] > 0 for m in minutes for c in COMPONENTS)
    # ... and the gateway's by kind of mapping, where its late growth was looked for.
    kinds = [m["gateway_memory_kib"] for m in minutes]
    assert all(k["heap"] > 0 and k["anon"] > 0 and k["threads"] > 1 for k in kinds), kinds
    for c in COMPONENTS:
        rss = figures["rss"][c]
        assert rss["after_warmup_mb"] > 0 and rss["growth_after_warmup_pct"] == rss["growth_after_warmup_pct"]
    for moment in ("start", "end"):
        processes = figures[moment]["processes"]
        assert COMPONENTS <= processes.keys(), processes
        assert all(processes[c]["rss_kib"] > 0 and processes[c]["open_files"] > 0 for c in COMPONENTS)
        assert figures[moment]["db_bytes"] > 0
    for line in ("minute   1:", "p99", "RSS start", "slope/10min", "gateway", "database", "errors"):
        assert line in run.stdout, line
    stack_id = next(line.split()[-1] for line in run.stdout.splitlines() if line.startswith("stack id "))
    assert tagged_processes(stack_id) == [], "the soak's stack left processes behind"
