"""The soak's calibration counts every study its concurrent loops complete (issue 13).

``done += await self.one(None)`` read ``done`` before the await, so each loop wrote back a stale
sum and the measured maximum was about 1/concurrency of the real one.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.soak import Minute, Soak, rss_figures


def test_calibrate_counts_the_studies_of_every_loop() -> None:
    load = Soak.__new__(Soak)  # no stack: only the counting is under test
    completed = 0

    async def one(minute: object) -> bool:
        nonlocal completed
        await asyncio.sleep(0.01)
        completed += 1
        return True

    load.one = one  # type: ignore[method-assign]
    rate = asyncio.run(load.calibrate(0.3, concurrency=8))
    assert completed >= 8 * 10
    # Every completed study is counted: the rate is at least what the loops did in the window.
    assert rate >= 0.8 * completed / 0.5, (rate, completed)


def _minutes(series: list[int]) -> list[Minute]:
    return [Minute(rss_kib={"gateway": kib}) for kib in series]


def test_rss_growth_is_measured_after_warm_up_and_a_leak_shows_as_a_slope() -> None:
    # A high-water mark reached in the loaded first minutes, then flat: no growth after warm-up.
    plateau = [150_000, 200_000, 230_000, 240_000, 240_000] + [240_000] * 10
    # A leak: 1 MB more every minute, for ever.
    leak = [240_000 + 1024 * i for i in range(15)]
    for series, growth, slope in ((plateau, 0.0, 0.0), (leak, 4.2, 10.0)):
        start = {"processes": {"gateway": {"rss_kib": series[0], "open_files": 9}}}
        end = {"processes": {"gateway": {"rss_kib": series[-1], "open_files": 9}}}
        figures = rss_figures(start, end, _minutes(series), warmup=5)["gateway"]
        assert figures["growth_after_warmup_pct"] == pytest.approx(growth, abs=0.1), series
        assert figures["slope_second_half_mb_per_10min"] == pytest.approx(slope, abs=0.01), series
    # Growth measured from the start would call the plateau a 60% leak.
    assert plateau[-1] / plateau[0] - 1 == pytest.approx(0.6)


def test_memory_by_kind_adds_up_to_rss_and_places_a_large_buffer_in_anonymous_memory() -> None:
    import os
    import threading
    from pathlib import Path

    import numpy as np

    from benchmarks.soak import memory_kinds

    def rss_kib() -> int:
        status = Path(f"/proc/{os.getpid()}/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    before = memory_kinds(os.getpid())
    total = before["heap"] + before["anon"] + before["file"]
    assert abs(total - rss_kib()) <= 0.05 * rss_kib(), (before, rss_kib())
    assert before["threads"] >= threading.active_count()
    buffer = np.ones(64 * 1024 * 1024, dtype=np.uint8)  # 64 MiB, touched: glibc maps it anonymously
    after = memory_kinds(os.getpid())
    assert after["anon"] - before["anon"] >= 60 * 1024, (before, after)
    assert abs(after["file"] - before["file"]) < 8 * 1024
    del buffer
