"""Retrying calls to other services while they are unavailable."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sightline_common.errors import DependencyUnavailable
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


async def call_with_retry(
    fn: Callable[[], Awaitable[T]], *, attempts: int, backoff_s: float, stage: str
) -> T:
    """Call ``fn`` up to ``attempts`` times; retry only :class:`DependencyUnavailable`.

    The delays double from ``backoff_s`` (``backoff_s``, ``2 * backoff_s``, ...); any other error,
    and the last :class:`DependencyUnavailable`, reaches the caller unchanged.
    """

    def before_sleep(state: RetryCallState) -> None:
        log.warning("stage %s unavailable, retry %d/%d", stage, state.attempt_number, attempts - 1)

    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s, exp_base=2, min=0),
        retry=retry_if_exception_type(DependencyUnavailable),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity returns or re-raises")
