"""Settings refuse unsafe values outside development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sightline_common.settings import TelemetrySettings
from sightline_gateway.settings import GatewaySettings

from sightline.stack import StackSettings

GATEWAY = {
    "port": 8080,
    "database_url": "postgresql+asyncpg://db/sightline",
    "deid_url": "http://deid:8020",
    "preprocess_grpc": "preprocess:8081",
    "preprocess_http": "http://preprocess:8080",
    "explain_url": "http://explain:8030",
}


@pytest.mark.parametrize("secret", ["changeme", "sightline-dev-secret", "short-but-not-default"])
def test_gateway_refuses_a_weak_jwt_secret_in_production(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        GatewaySettings(environment="production", jwt_secret=secret, **GATEWAY)


def test_gateway_accepts_a_weak_secret_only_in_development() -> None:
    settings = GatewaySettings(environment="development", jwt_secret="changeme", **GATEWAY)
    assert settings.is_development


def test_gateway_refuses_sqlite_in_production() -> None:
    with pytest.raises(ValidationError, match="SQLite"):
        GatewaySettings(
            environment="production",
            jwt_secret="x" * 40,
            **(GATEWAY | {"database_url": "sqlite+aiosqlite:///x.db"}),
        )


def test_tracing_cannot_be_switched_off_in_production() -> None:
    with pytest.raises(ValidationError, match="tracing"):
        GatewaySettings(
            environment="production",
            jwt_secret="x" * 40,
            telemetry=TelemetrySettings(exporter="none"),
            **GATEWAY,
        )


def test_settings_have_no_default_for_required_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("SIGHTLINE_GATEWAY_"):
            monkeypatch.delenv(key)
    with pytest.raises(ValidationError) as err:
        GatewaySettings()  # type: ignore[call-arg]
    missing = {e["loc"][0] for e in err.value.errors() if e["type"] == "missing"}
    assert {"database_url", "deid_url", "jwt_secret"} <= missing


def test_stack_refuses_colliding_ports() -> None:
    # Ray Serve's default HTTP port is Triton's: the stack must never let two components share one.
    with pytest.raises(ValidationError, match="collide"):
        StackSettings(explain_port=8000)
