"""Per-client token-bucket rate limiting and signed object URLs (pure, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict

from sightline_common.errors import Forbidden, RateLimited


class RateLimiter:
    """``rate_per_minute`` sustained, ``burst`` at once, per client key (in this process)."""

    def __init__(self, rate_per_minute: int, burst: int, max_clients: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client: str, now: float | None = None) -> None:
        """Take one token or raise :class:`RateLimited` with the seconds until the next one."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / self.rate))
            raise RateLimited("rate limit exceeded for this client", retry_after=retry_after)
        self._buckets[client] = (tokens - 1.0, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


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
