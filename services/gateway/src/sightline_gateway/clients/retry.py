"""Retrying calls to other services while they are unavailable.

Two schedules, both tenacity's: :func:`call_with_retry` retries in process (a few quick tries,
or until a deadline, while a caller waits); :class:`RetryPolicy` schedules a durable job's next
attempt after a dependency failed, with jittered exponential backoff, until a time budget is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sightline_common.errors import DependencyUnavailable
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """When a job that met an unavailable dependency runs again, and when it stops trying.

    Delays are "equal jitter" exponential: half of ``min(cap_s, first_s * 2**(n-1))`` plus a
    random share of the other half, so that the jobs an outage held back do not return in one
    wave; the job stops being retried once ``budget_s`` has passed since its study was accepted.
    """

    budget_s: float = 900.0
    first_s: float = 1.0
    cap_s: float = 30.0
    _wait: wait_base = field(init=False, repr=False, compare=False)
    _stop: stop_base = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        half, cap = self.first_s / 2, self.cap_s / 2
        wait = wait_exponential(multiplier=half, max=cap) + wait_random_exponential(multiplier=half, max=cap)
        object.__setattr__(self, "_wait", wait)
        object.__setattr__(self, "_stop", stop_after_delay(self.budget_s))

    def next_delay(self, attempt: int, elapsed_s: float) -> float | None:
        """Seconds until attempt ``attempt + 1``; ``None`` once the budget is spent.

        The last delay is shortened so that the final attempt still falls inside the budget.
        """
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(1, attempt)
        state.start_time, state.outcome_timestamp = 0.0, max(0.0, elapsed_s)
        if self._stop(state):
            return None
        return min(self._wait(state), self.budget_s - elapsed_s)


class stop_at_deadline(stop_base):  # tenacity's naming
    """Stop once ``deadline`` (``time.monotonic()``) has passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() >= self.deadline


class wait_until_deadline(wait_base):  # tenacity's naming
    """``inner``'s delay, shortened so that the last attempt still starts by ``deadline``.

    Without it, a jittered delay drawn past the deadline ends the retries early, and the caller
    gets its error before the budget it was promised is used.
    """

    def __init__(self, inner: wait_base, deadline: float) -> None:
        self.inner, self.deadline = inner, deadline

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(0.0, min(self.inner(retry_state), self.deadline - time.monotonic()))


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = None,
    deadline: float | None = None,
    backoff_s: float,
    max_backoff_s: float | None = None,
    stage: str,
) -> T:
    """Call ``fn`` up to ``attempts`` times and/or until ``deadline`` (``time.monotonic()``);
    retry only :class:`DependencyUnavailable`.

    Jittered delays of up to ``backoff_s``, ``2 * backoff_s``, ... (capped at ``max_backoff_s``);
    any other error, and the last :class:`DependencyUnavailable`, reaches the caller unchanged.
    """
    if attempts is None and deadline is None:
        raise ValueError("call_with_retry needs attempts or a deadline")
    stop: stop_base = stop_never
    if attempts is not None:
        stop = stop | stop_after_attempt(attempts)
    if deadline is not None:
        stop = stop | stop_at_deadline(deadline)

    def before_sleep(state: RetryCallState) -> None:
        log.warning("stage %s unavailable, retry %d", stage, state.attempt_number)

    wait: wait_base = wait_random_exponential(multiplier=backoff_s, max=max_backoff_s or float("inf"))
    if deadline is not None:
        wait = wait_until_deadline(wait, deadline)
    async for attempt in AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception_type(DependencyUnavailable),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity returns or re-raises")
