"""In-process notices between the intake and the workers: a job was queued, a study finished.

The database is the source of truth; these only save a poll interval.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Wakeup:
    """Wakes one idle worker per queued job instead of every worker (each would run a claim).

    A notice that finds no idle worker is kept (up to one per worker), so a worker whose claim
    ran just before the job committed does not sleep a poll interval on it.
    """

    def __init__(self) -> None:
        self._idle: deque[asyncio.Future[None]] = deque()
        self._pending = 0
        self.workers = 0

    def notify(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._pending = min(self._pending + 1, max(1, self.workers))

    def notify_all(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._pending = max(1, self.workers)

    async def wait(self, timeout_s: float) -> None:
        """Return at the next notice or after ``timeout_s``."""
        if self._pending:
            self._pending -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            pass
        finally:
            if waiter in self._idle:
                self._idle.remove(waiter)


class Watchers:
    """Studies a synchronous request is waiting on; the worker reports each run of their job."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        #: Set on shutdown: a waiting request answers with the study as it stands (202 and its
        #: Location) instead of holding the server's drain until its own timeout.
        self.closing = False

    def watch(self, study_id: str) -> asyncio.Event:
        event = self._events.setdefault(study_id, asyncio.Event())
        if self.closing:
            event.set()
        return event

    def close(self) -> None:
        """Shutdown: wake every waiting request now, and every later one at once."""
        self.closing = True
        for event in self._events.values():
            event.set()

    def watched(self, study_id: str) -> bool:
        return study_id in self._events

    def forget(self, study_id: str) -> None:
        self._events.pop(study_id, None)

    def report(self, study_id: str) -> None:
        event = self._events.get(study_id)
        if event is not None:
            event.set()
