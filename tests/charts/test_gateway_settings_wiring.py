"""The gateway's settings the chart owns (issues 13 and 14): one rate-limit budget across
replicas through a shared Redis (env from a Secret, NetworkPolicy egress to it, preflight), and
start-up migrations left to the hook Job whenever the chart renders one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, RELEASE, render, run_helm
from .netpol import External, allowed
from .test_network_flows import _pods

pytestmark = pytest.mark.charts

DEFAULT = str(CHART / "ci" / "default-values.yaml")
CPU = str(CHART / "ci" / "cpu-values.yaml")
REDIS = External("10.40.0.7", "Redis")
REDIS_SET = ("rateLimit.redis.existingSecret=sightline-redis",)


def _gateway_env(docs: list[dict]) -> dict[str, dict]:
    deploy = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-gateway"
    )
    return {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_without_redis_each_replica_limits_on_its_own() -> None:
    env = _gateway_env(render(DEFAULT))
    assert env["SIGHTLINE_GATEWAY_RATE_LIMIT_PER_MINUTE"]["value"] == "600"
    assert env["SIGHTLINE_GATEWAY_RATE_LIMIT_BURST"]["value"] == "60"
    assert "SIGHTLINE_GATEWAY_RATE_LIMIT_STORAGE" not in env


def test_replicas_share_the_budget_through_redis() -> None:
    docs = render(DEFAULT, *REDIS_SET)
    env = _gateway_env(docs)
    assert env["SIGHTLINE_GATEWAY_RATE_LIMIT_STORAGE"]["valueFrom"] == {
        "secretKeyRef": {"name": "sightline-redis", "key": "url"}
    }
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _pods(docs)
    assert allowed(policies, pods["gateway"], REDIS, 6379), "gateway -> Redis"
    for other in ("deid", "preprocess", "explain"):
        assert not allowed(policies, pods[other], REDIS, 6379), f"{other} -> Redis"
    assert not allowed(policies, pods["gateway"], External("198.51.100.7"), 6379), "gateway -> public Redis"


def test_the_gateway_migrates_at_start_only_without_the_hook_job() -> None:
    with_job = render(DEFAULT)
    assert [d for d in with_job if d["kind"] == "Job"]
    assert _gateway_env(with_job)["SIGHTLINE_GATEWAY_MIGRATE_ON_START"]["value"] == "false"
    in_chart_db = render(CPU)  # the in-chart PostgreSQL: no hook Job, the gateway migrates
    assert not [d for d in in_chart_db if d["kind"] == "Job"]
    assert _gateway_env(in_chart_db)["SIGHTLINE_GATEWAY_MIGRATE_ON_START"]["value"] == "true"


def test_routing_defaults_to_the_triton_model_for_every_tenant_and_takes_per_tenant_models() -> None:
    """The env the chart renders is what the gateway's settings parse (JSON list and object)."""
    from sightline_gateway.settings import GatewaySettings

    env = _gateway_env(render(DEFAULT))
    assert env["SIGHTLINE_GATEWAY_MODELS"]["value"] == '["derm-cnn"]'
    assert env["SIGHTLINE_GATEWAY_MODELS_ENABLED"]["value"] == "{}"
    assert env["SIGHTLINE_GATEWAY_MODEL_REPOSITORY"]["value"] == "/models"
    env = _gateway_env(
        render(
            DEFAULT,
            "routing.models={derm-cnn,cxr-pneumonia}",
            "routing.modelsEnabled.derm-clinic={derm-cnn}",
        )
    )
    values = {
        "models": env["SIGHTLINE_GATEWAY_MODELS"]["value"],
        "models_enabled": env["SIGHTLINE_GATEWAY_MODELS_ENABLED"]["value"],
    }
    parsed = GatewaySettings.model_validate(
        {
            "database_url": "sqlite+aiosqlite:///x.db",
            "deid_url": "http://deid",
            "preprocess_grpc": "p:1",
            "preprocess_http": "http://p",
            "explain_url": "http://e",
            "jwt_secret": "chart-wiring-test-" + "x" * 24,
            "environment": "test",
            **{k: json.loads(v) for k, v in values.items()},
        }
    )
    assert parsed.models == ["derm-cnn", "cxr-pneumonia"]
    assert parsed.models_enabled == {"derm-clinic": ["derm-cnn"]}


def test_the_k_of_re_identification_risk_reaches_the_gateway_and_below_two_is_refused() -> None:
    assert _gateway_env(render(DEFAULT))["SIGHTLINE_GATEWAY_REIDENTIFICATION_K"]["value"] == "5"
    env = _gateway_env(render(DEFAULT, "privacy.kAnonymity=11"))
    assert env["SIGHTLINE_GATEWAY_REIDENTIFICATION_K"]["value"] == "11"
    result = run_helm(
        "template", RELEASE, str(CHART), "-f", DEFAULT, "--set", "privacy.kAnonymity=1", check=False
    )
    assert result.returncode != 0 and "kAnonymity" in result.stderr


def test_lifecycle_versions_and_gates_reach_the_gateway_as_its_settings_parse_them(tmp_path) -> None:
    """Issue 19: a candidate in shadow and canary for every tenant, pinned for one, and the gates."""
    from sightline_gateway.settings import GatewaySettings

    values = tmp_path / "lifecycle.yaml"
    values.write_text(
        "lifecycle:\n"
        "  adminTenant: platform\n"
        "  versions:\n"
        '    "*": {derm-cnn: {candidate: 2, shadow: true, canaryShare: 0.05}}\n'
        "    derm-clinic: {derm-cnn: {serving: 1}}\n"
        "  gates: {eceMax: 0.04, outOfScopeTolerance: 0.02, shadowDisagreementMax: 0.03,"
        " shadowMinStudies: 500, shadowWindowDays: 7}\n"
    )
    result = run_helm("template", RELEASE, str(CHART), "-f", DEFAULT, "-f", str(values))
    env = _gateway_env([d for d in yaml.safe_load_all(result.stdout) if d])
    parsed = GatewaySettings.model_validate(
        {
            "database_url": "sqlite+aiosqlite:///x.db",
            "deid_url": "http://deid",
            "preprocess_grpc": "p:1",
            "preprocess_http": "http://p",
            "explain_url": "http://e",
            "jwt_secret": "chart-wiring-test-" + "x" * 24,
            "environment": "test",
            "model_versions": json.loads(env["SIGHTLINE_GATEWAY_MODEL_VERSIONS"]["value"]),
            "lifecycle_gates": json.loads(env["SIGHTLINE_GATEWAY_LIFECYCLE_GATES"]["value"]),
            "lifecycle_admin_tenant": env["SIGHTLINE_GATEWAY_LIFECYCLE_ADMIN_TENANT"]["value"],
        }
    )
    default = parsed.model_versions["*"]["derm-cnn"]
    assert (default.candidate, default.shadow, default.canary_share, default.serving) == (2, True, 0.05, None)
    assert parsed.model_versions["derm-clinic"]["derm-cnn"].serving == 1
    assert parsed.lifecycle_gates.shadow_min_studies == 500 and parsed.lifecycle_gates.ece_max == 0.04
    assert parsed.lifecycle_admin_tenant == "platform"
    plain = _gateway_env(render(DEFAULT))
    assert plain["SIGHTLINE_GATEWAY_MODEL_VERSIONS"]["value"] == "{}"


def test_a_shadow_without_a_candidate_or_a_share_above_one_is_refused(tmp_path: Path) -> None:
    for body, message in (
        ('    "*": {derm-cnn: {shadow: true}}\n', "shadow and canaryShare need a candidate"),
        ('    "*": {derm-cnn: {candidate: 2, canaryShare: 1.5}}\n', "canaryShare"),
    ):
        values = tmp_path / "bad.yaml"
        values.write_text("lifecycle:\n  versions:\n" + body)
        result = run_helm("template", RELEASE, str(CHART), "-f", DEFAULT, "-f", str(values), check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr
