"""The soak's calibration counts every study its concurrent loops complete (issue 13).

``done += await self.one(None)`` read ``done`` before the await, so each loop wrote back a stale
sum and the measured maximum was about 1/concurrency of the real one.
"""

from __future__ import annotations

import asyncio

from benchmarks.soak import Soak


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
