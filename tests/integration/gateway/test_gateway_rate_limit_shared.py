"""Issue 13: the rate limit is one budget across gateway replicas when they share Redis.

Two gateway apps (two replicas) on the Redis at 127.0.0.1:6379; one client spends its burst
across both and the next request to either is refused. Without a storage, or when Redis is
unreachable, each replica limits on its own and keeps serving.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.unit.gateway.gateway_fixtures import harness, token

pytestmark = pytest.mark.integration
REDIS = "redis://127.0.0.1:6379/0"


def _codes(h: object, subject: str, n: int) -> list[int]:
    return [
        h.client.get("/v1/models", headers=token(subject=subject)).status_code  # type: ignore[attr-defined]
        for _ in range(n)
    ]


def test_two_replicas_on_redis_share_one_budget(tmp_path: Path) -> None:
    subject = "dr-shared-" + secrets.token_hex(4)
    limits = {"rate_limit_per_minute": 1, "rate_limit_burst": 3, "rate_limit_storage": REDIS}
    with harness(tmp_path / "a", **limits) as a, harness(tmp_path / "b", **limits) as b:
        assert _codes(a, subject, 2) == [200, 200]
        assert _codes(b, subject, 2) == [200, 429]
        refused = a.client.get("/v1/models", headers=token(subject=subject))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        # another client has its own budget
        assert _codes(b, subject + "-other", 1) == [200]


def test_replicas_without_shared_storage_limit_each_on_their_own(tmp_path: Path) -> None:
    subject = "dr-local-" + secrets.token_hex(4)
    limits = {"rate_limit_per_minute": 1, "rate_limit_burst": 2}
    with harness(tmp_path / "a", **limits) as a, harness(tmp_path / "b", **limits) as b:
        assert _codes(a, subject, 3) == [200, 200, 429]
        assert _codes(b, subject, 2) == [200, 200]


def test_unreachable_redis_falls_back_to_the_replica_limit(tmp_path: Path) -> None:
    subject = "dr-fallback-" + secrets.token_hex(4)
    limits = {
        "rate_limit_per_minute": 1,
        "rate_limit_burst": 2,
        "rate_limit_storage": "redis://127.0.0.1:1/0",
    }
    with harness(tmp_path, **limits) as h:
        assert _codes(h, subject, 3) == [200, 200, 429]
