"""The chart's way back (issue 18): per-tenant PACS destinations as the gateway's settings parse them,
the tenant keys mounted read-only from their Secret (KMS-style), and NetworkPolicy egress to the
PACS only (a destination without peers is refused: it would open the port to any address)."""

from __future__ import annotations

import json

import pytest

from .conftest import CHART, RELEASE, render, render_text
from .netpol import External, allowed
from .test_network_flows import _pods

pytestmark = pytest.mark.charts

DEFAULT = str(CHART / "ci" / "default-values.yaml")
PACS = External("10.50.0.9", "PACS")
DESTINATIONS = (
    "pacsForwarding.destinations.derm-clinic.name=clinic-pacs",
    "pacsForwarding.destinations.derm-clinic.stow_url=https://pacs.clinic.example/dicom-web/studies",
    "pacsForwarding.destinations.cxr-ward.name=ward-pacs",
    "pacsForwarding.destinations.cxr-ward.host=10.50.0.9",
    "pacsForwarding.destinations.cxr-ward.port=11112",
    "pacsForwarding.destinations.cxr-ward.called_ae_title=WARDPACS",
    "pacsForwarding.networkPeers[0].ipBlock.cidr=10.50.0.0/24",
)


def _gateway(docs: list[dict]) -> dict:
    return next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-gateway"
    )


def _env(docs: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in _gateway(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_by_default_nothing_is_forwarded_nor_kept() -> None:
    docs = render(DEFAULT)
    env = _env(docs)
    assert "SIGHTLINE_GATEWAY_PACS_DESTINATIONS" not in env
    assert "SIGHTLINE_GATEWAY_REIDENTIFICATION_KEYS_FILE" not in env
    volumes = {v["name"] for v in _gateway(docs)["spec"]["template"]["spec"]["volumes"]}
    assert "tenant-keys" not in volumes


def test_destinations_reach_the_gateway_settings_with_the_tenant_keys_from_their_secret() -> None:
    from sightline_gateway.settings import GatewaySettings

    docs = render(DEFAULT, *DESTINATIONS)
    env = _env(docs)
    keys_file = env["SIGHTLINE_GATEWAY_REIDENTIFICATION_KEYS_FILE"]["value"]
    parsed = GatewaySettings.model_validate(
        {
            "environment": "test",
            "database_url": "sqlite+aiosqlite:///x.db",
            "deid_url": "http://deid",
            "preprocess_grpc": "p:1",
            "preprocess_http": "http://p",
            "explain_url": "http://e",
            "jwt_secret": "chart-test-secret-" + "x" * 24,
            "pacs_destinations": json.loads(env["SIGHTLINE_GATEWAY_PACS_DESTINATIONS"]["value"]),
            "reidentification_keys_file": keys_file,
            "delivery_retry_budget_s": env["SIGHTLINE_GATEWAY_DELIVERY_RETRY_BUDGET_S"]["value"],
        }
    )
    assert parsed.pacs_destinations["derm-clinic"].kind == "stow-rs"
    ward = parsed.pacs_destinations["cxr-ward"]
    assert (ward.kind, ward.port, ward.called_ae_title) == ("c-store", 11112, "WARDPACS")
    assert parsed.delivery_retry_budget_s == 86400
    pod = _gateway(docs)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tenant-keys"]
    assert volume["secret"]["secretName"] == "sightline-gateway-tenant-keys"
    assert volume["secret"]["items"] == [{"key": "tenant-keys.json", "path": "tenant-keys.json"}]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "tenant-keys"]
    assert mount["readOnly"] is True and keys_file.startswith(mount["mountPath"] + "/")


def test_only_the_gateway_may_reach_the_pacs() -> None:
    docs = render(DEFAULT, *DESTINATIONS)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _pods(docs)
    for port in (443, 11112):
        assert allowed(policies, pods["gateway"], PACS, port), f"gateway -> PACS:{port}"
        for other in ("deid", "preprocess", "explain"):
            assert not allowed(policies, pods[other], PACS, port), f"{other} -> PACS"
    assert not allowed(policies, pods["gateway"], External("198.51.100.7"), 11112), "gateway -> anywhere"


def test_a_destination_without_network_peers_or_of_two_kinds_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"pacsForwarding\.networkPeers"):
        render_text(DEFAULT, *DESTINATIONS[:-1])
    with pytest.raises(AssertionError, match=r"oneOf|values don.t meet"):
        render_text(DEFAULT, *DESTINATIONS, "pacsForwarding.destinations.derm-clinic.port=104")
