"""Which job stages may run now: a circuit per downstream dependency (preprocess, explain).

A circuit opens when a stage's call finds its dependency unavailable, or when the dependency's
readiness probe says not ready; while it is open, workers do not claim jobs waiting on that stage
(they would only spend their retry budget). It closes when the probe says ready again (or,
without a probe, after a cool-down), and the jobs it held back are made due at once.

These dependencies do not gate the gateway's own readiness: studies are still accepted and
queued while they are down; ``/health/ready`` and the ``sightline_dependency_up`` gauge report them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import Gauge

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]
OnClose = Callable[[str], Awaitable[None]]

DEPENDENCY_UP = Gauge(
    "sightline_dependency_up",
    "1 while a downstream dependency is ready, 0 while its circuit is open (jobs wait for it).",
    ["service", "dependency"],
)

#: The dependency each job stage waits for. A study at stage ``explain`` does not wait: its
#: result goes out with the explanation pending, and the ``backfill`` stage waits instead.
STAGE_DEPENDENCY = {"preprocess": "preprocess", "backfill": "explain"}


class Circuits:
    """Open/closed state per dependency, fed by failed calls and by readiness probes."""

    def __init__(
        self, probes: Mapping[str, Probe], *, cooldown_s: float, probe_timeout_s: float = 2.0
    ) -> None:
        self.probes = dict(probes)
        self.cooldown_s, self.probe_timeout_s = cooldown_s, probe_timeout_s
        self._opened: dict[str, float] = {}  # dependency -> monotonic time it opened
        self._probed_down: set[str] = set()  # open because the probe said so, not only a call
        self._on_close: list[OnClose] = []
        for name in set(STAGE_DEPENDENCY.values()) | set(self.probes):
            DEPENDENCY_UP.labels("gateway", name).set(1)

    def on_close(self, callback: OnClose) -> None:
        """Call ``callback(stage)`` for each stage whose dependency became ready again."""
        self._on_close.append(callback)

    def trip(self, stage: str) -> None:
        """A call of ``stage`` found its dependency unavailable."""
        dependency = STAGE_DEPENDENCY.get(stage)
        if dependency is None:
            return
        if dependency in self._opened:
            self._opened[dependency] = time.monotonic()  # without a probe: cool down again
        else:
            self._open(dependency)

    def blocked_stages(self) -> frozenset[str]:
        """Stages whose jobs must not be claimed now."""
        now = time.monotonic()
        open_deps = {
            dep for dep, at in self._opened.items() if dep in self.probes or now - at < self.cooldown_s
        }
        return frozenset(stage for stage, dep in STAGE_DEPENDENCY.items() if dep in open_deps)

    def status(self) -> dict[str, bool]:
        """Each dependency: ready (circuit closed) or not."""
        names = set(STAGE_DEPENDENCY.values()) | set(self.probes)
        return {name: name not in self._opened for name in sorted(names)}

    async def refresh(self) -> None:
        """Probe every dependency once; open or close circuits by what the probes say."""
        now = time.monotonic()
        for name in sorted(set(STAGE_DEPENDENCY.values()) | set(self.probes)):
            probe = self.probes.get(name)
            if probe is None:
                ready = name not in self._opened or now - self._opened[name] >= self.cooldown_s
            else:
                ready = await self._probe(name, probe)
            if not ready:
                self._probed_down.add(name)
            if not ready and name not in self._opened:
                self._open(name)
            elif ready and name in self._opened:
                await self._close(name)

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Probe every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - probing must never stop the gateway
                log.warning("dependency probe failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            return bool(await asyncio.wait_for(probe(), self.probe_timeout_s))
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.info("dependency %s not ready: %s", name, type(exc).__name__)
            return False

    def _open(self, dependency: str) -> None:
        self._opened[dependency] = time.monotonic()
        DEPENDENCY_UP.labels("gateway", dependency).set(0)
        log.warning("dependency %s unavailable: holding its jobs", dependency)

    async def _close(self, dependency: str) -> None:
        del self._opened[dependency]
        DEPENDENCY_UP.labels("gateway", dependency).set(1)
        if dependency not in self._probed_down:
            return  # a failed call while the probe said ready: the jobs keep their own backoff
        self._probed_down.discard(dependency)
        log.info("dependency %s ready again: resuming its jobs", dependency)
        for stage, dep in STAGE_DEPENDENCY.items():
            if dep == dependency:
                for callback in self._on_close:
                    await callback(stage)
