"""Per-client rate limiting (the ``limits`` library) and signed object URLs.

The limiter's counters live in Redis when a storage URI names one, so every gateway replica draws
on one budget per client and the chart's HPA does not multiply the limit; in process memory
otherwise (one replica, development).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from sightline_common.errors import Forbidden, RateLimited

log = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")
STORAGE_RETRY_S = 5.0


def limiter_storage(uri: str | None) -> Storage:
    """Async storage for ``uri`` (``redis://host:port/db`` and friends); memory when ``None``."""
    if uri is None or uri == "memory://":
        return MemoryStorage()
    if not uri.startswith(_REDIS_SCHEMES):
        raise ValueError("rate limit storage must be a redis://, rediss:// or redis+unix:// URI")
    return RedisStorage(
        "async+" + uri,
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix="sightline-gateway",
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
    )


class RateLimiter:
    """``rate_per_minute`` sustained and ``burst`` at once, per client key.

    A moving window of ``burst`` requests per ``burst / rate`` seconds: a client may spend its whole
    burst at once and then sustains ``rate_per_minute``, as the token bucket this replaces did. When
    the shared storage is unreachable the limiter falls back to this process's memory (a Redis
    outage loosens the limit by the replica count; it does not refuse every request).
    """

    def __init__(self, rate_per_minute: int, burst: int, storage: Storage | None = None) -> None:
        window_s = max(1, math.ceil(burst * 60 / rate_per_minute))
        self.item = RateLimitItemPerSecond(burst, window_s)
        self.shared = storage is not None and not isinstance(storage, MemoryStorage)
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())
        self._fallback = MovingWindowRateLimiter(MemoryStorage())
        self._warned_at = -math.inf
        self._storage_down_until = -math.inf

    async def check(self, client: str) -> None:
        """Count one request or raise :class:`RateLimited` with the seconds until the next one."""
        limiter = self._limiter if time.monotonic() >= self._storage_down_until else self._fallback
        try:
            allowed = await limiter.hit(self.item, client)
        except StorageError:
            self._storage_down()
            limiter = self._fallback
            allowed = await limiter.hit(self.item, client)
        if allowed:
            return
        try:
            stats = await limiter.get_window_stats(self.item, client)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        except StorageError:
            retry_after = self.item.get_expiry()
        raise RateLimited("rate limit exceeded for this client", retry_after=retry_after)

    def _storage_down(self) -> None:
        """Skip the shared storage for a few seconds (a black-holed Redis costs a timeout per try)."""
        now = time.monotonic()
        self._storage_down_until = now + STORAGE_RETRY_S
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("rate limit storage unreachable; limiting per replica until it is back")


class UrlSigner:
    """Time-limited links to stored objects, served by the gateway for the local store."""

    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), b"sightline object urls v1", hashlib.sha256).digest()

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def check(self, key: str, expires: int, signature: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not hmac.compare_digest(self.signature(key, expires), signature):
            raise Forbidden("invalid link signature")
        if expires < now:
            raise Forbidden("link expired")
