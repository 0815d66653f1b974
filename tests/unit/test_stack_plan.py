"""The stack's plan configures each service through that service's own Settings class.

A field renamed in a service's settings must break here (and at ``sightline up`` before any
process starts), not as a child that exits during start-up with a validation error in its log.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sightline_common.settings import TelemetrySettings
from sightline_deid.settings import DeidSettings
from sightline_explain.settings import ExplainSettings
from sightline_gateway.settings import GatewaySettings
from sightline_preprocess.settings import PreprocessSettings
from sightline_receiver.settings import ReceiverSettings

from sightline.stack import StackSettings, plan, settings_on_free_ports
from sightline.stack.env import build_settings, env_prefix
from sightline.stack.plan import PROCESS_ENV, SERVICE_ENV, dev_secrets, service_settings
from sightline.stack.state import Component
from tests.conftest import REPO

SERVICES: dict[str, type[BaseSettings]] = {
    "preprocess": PreprocessSettings,
    "deid": DeidSettings,
    "explain": ExplainSettings,
    "gateway": GatewaySettings,
    "receiver": ReceiverSettings,
}


@pytest.fixture
def stack_settings(tmp_path: Path) -> StackSettings:
    return settings_on_free_ports(
        tmp_path, model_repository=REPO / "model_repository", otel_otlp_endpoint="http://127.0.0.1:4318"
    )


@pytest.fixture
def planned(stack_settings: StackSettings) -> dict[str, Component]:
    return {c.name: c for c in plan(stack_settings, "sightline_test_")}


def _only_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in list(os.environ):
        if key.startswith("SIGHTLINE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_plan_starts_triton_then_each_service(planned: dict[str, Component]) -> None:
    assert list(planned) == ["otlp-sink", "triton", *SERVICES]


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_env_var_of_a_service_is_a_field_of_its_settings(
    planned: dict[str, Component], name: str
) -> None:
    cls = SERVICES[name]
    prefixes: dict[str, type[BaseSettings]] = {
        env_prefix(cls): cls,
        env_prefix(TelemetrySettings): TelemetrySettings,
    }
    for key in planned[name].env:
        if key in PROCESS_ENV or key in SERVICE_ENV.get(name, {}):
            continue
        owner = next((c for p, c in prefixes.items() if key.startswith(p)), None)
        assert owner is not None, f"{key} has neither {name}'s prefix nor the telemetry prefix"
        field = key.removeprefix(env_prefix(owner)).lower()
        assert field in owner.model_fields, f"{key} is not a field of {owner.__name__}"


@pytest.mark.parametrize("name", list(SERVICES))
def test_each_service_builds_the_planned_settings_from_its_env(
    planned: dict[str, Component], stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    expected = service_settings(stack_settings, dev_secrets(stack_settings.data_dir.resolve()))[name]
    _only_env(monkeypatch, planned[name].env)
    built = SERVICES[name]()  # what `python -m sightline_<name>` does with its environment
    assert built.model_dump() == expected.model_dump()
    assert built.telemetry.otlp_endpoint == "http://127.0.0.1:4318"  # type: ignore[attr-defined]


def test_a_misspelt_field_fails_when_the_plan_is_built() -> None:
    with pytest.raises(ValidationError, match="reciep"):
        build_settings(DeidSettings, port=8020, recipe="sightline-basic", reciep="x")  # type: ignore[call-arg]


def test_the_shell_environment_does_not_reach_the_services(
    stack_settings: StackSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_GATEWAY_RATE_LIMIT_PER_MINUTE", "5")
    monkeypatch.setenv("SIGHTLINE_OTEL_SAMPLE_RATIO", "0.5")
    gateway = {c.name: c for c in plan(stack_settings, "sightline_test_")}["gateway"]
    # The stack sets the limit itself (gateway_rate_limit_per_minute): its value, not the shell's.
    assert gateway.env["SIGHTLINE_GATEWAY_RATE_LIMIT_PER_MINUTE"] == "600"
    assert "SIGHTLINE_OTEL_SAMPLE_RATIO" not in gateway.env
    settings = service_settings(stack_settings, dev_secrets(stack_settings.data_dir.resolve()))["gateway"]
    assert isinstance(settings, GatewaySettings)
    assert settings.rate_limit_per_minute == 600 and settings.telemetry.sample_ratio == 1.0


def test_every_model_of_the_repository_is_served(
    stack_settings: StackSettings, planned: dict[str, Component]
) -> None:
    """Triton loads the whole repository and is ready once every model is (strict readiness);
    preprocess, explain and the gateway's routing cover each model with a manifest: dermoscopy
    and chest X-ray."""
    services = service_settings(stack_settings, dev_secrets(stack_settings.data_dir))
    both = ["cxr-pneumonia", "derm-cnn"]
    assert services["preprocess"].models == both  # type: ignore[attr-defined]
    assert services["explain"].models == both  # type: ignore[attr-defined]
    assert sorted(services["gateway"].models) == both  # type: ignore[attr-defined]
    assert planned["triton"].ready_url.endswith("/v2/health/ready")
    assert "--strict-readiness=true" in planned["triton"].command
    only = stack_settings.model_copy(update={"models": ["derm-cnn"]})
    assert service_settings(only, dev_secrets(only.data_dir))["preprocess"].models == ["derm-cnn"]  # type: ignore[attr-defined]


def test_the_receiver_takes_the_sop_classes_the_served_models_declare(stack_settings: StackSettings) -> None:
    """A chest X-ray (DX/CR) C-STORE reaches the gateway's routing instead of being refused at
    association because the receiver kept dermoscopy's SOP classes."""
    from pydicom.uid import (
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        VLPhotographicImageStorage,
    )

    receiver = service_settings(stack_settings, dev_secrets(stack_settings.data_dir))["receiver"]
    classes = set(receiver.sop_classes)  # type: ignore[attr-defined]
    assert {DigitalXRayImageStorageForPresentation, ComputedRadiographyImageStorage} <= classes
    assert VLPhotographicImageStorage in classes
    only = stack_settings.model_copy(update={"models": ["derm-cnn"]})
    derm = service_settings(only, dev_secrets(only.data_dir))["receiver"]
    assert DigitalXRayImageStorageForPresentation not in derm.sop_classes  # type: ignore[attr-defined]


def test_the_gateway_runs_with_two_malloc_arenas(planned: dict[str, Component]) -> None:
    # README, soak: with glibc's default arenas the gateway's RSS stepped +5.3% late in a 30-minute
    # soak; with two it stayed flat. The image sets the same for the chart.
    assert planned["gateway"].env.get("MALLOC_ARENA_MAX") == "2"
    dockerfile = (Path(__file__).resolve().parents[2] / "services/gateway/Dockerfile").read_text()
    assert "MALLOC_ARENA_MAX=2" in dockerfile
