"""When to restart a component that exited: the kubelet's CrashLoopBackOff, on one machine.

The first restart waits ``initial_s``; each further exit doubles the wait up to ``cap_s``. A
component that ran for ``reset_after_s`` before exiting was healthy: its next restart waits
``initial_s`` again, so one crash a day never waits minutes, and a crash loop never spins.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential restart delays, capped, reset after a period of healthy running."""

    initial_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 60.0
    reset_after_s: float = 120.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.cap_s) or self.factor < 1 or self.reset_after_s <= 0:
            raise ValueError(f"invalid restart policy: {self}")

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows the ``failures``-th exit in a row (1-based)."""
        if failures < 1:
            raise ValueError("failures counts exits, from 1")
        # min() before the power's result can overflow: factor ** n grows past floats quickly.
        exponent = min(failures - 1, 64)
        return float(min(self.cap_s, self.initial_s * self.factor**exponent))


@dataclass
class Backoff:
    """One component's run of exits under a policy: how long to wait before the next start."""

    policy: RestartPolicy
    failures: int = 0

    def on_exit(self, ran_for_s: float) -> float:
        """Record an exit after ``ran_for_s`` seconds of running; return the wait before restarting."""
        if ran_for_s >= self.policy.reset_after_s:
            self.failures = 0
        self.failures += 1
        return self.policy.delay(self.failures)
