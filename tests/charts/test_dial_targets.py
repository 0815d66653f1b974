"""Every host:port a component is configured to dial inside the release resolves to a Service port
that will exist: one the chart renders, or one an operator creates for a custom resource
(issue 14, finding 5). The controllers' rules, as their source code applies them:

- KServe, RawDeployment (pkg/controller/v1beta1/inferenceservice/reconcilers/service/
  service_reconciler.go, createDefaultSvc): one Service per component, named
  `<inferenceservice>-predictor` / `-transformer`; port 80 targets the first port of the first
  container, and every further port of that container is exposed under its own number.
- KubeRay (RayService): `<rayservice>-serve-svc` exposes the head container's port named `serve`;
  `<rayservice>-head-svc` exposes every port of the head container.

Hosts outside the release's namespace (`name.other-namespace.svc`, external DNS names) are not
the chart's to resolve; NetworkPolicy egress to them is checked by test_network_flows.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import CHART, CI_VALUES, NAMESPACE, pod_specs, render, run_helm

pytestmark = pytest.mark.charts

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
DIAL_ENV = re.compile(r"_(URL|GRPC|HTTP|ENDPOINT)$")
DEFAULT_PORTS = {"http": 80, "https": 443, "s3": 443}


def service_ports(docs: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Service name -> ports, for the chart's Services and those the operators will create."""
    ports: dict[str, set[int]] = {}
    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind == "Service":
            ports[name] = {p["port"] for p in spec["ports"]}
        elif kind == "InferenceService":
            mode = doc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
            assert mode == "RawDeployment", "Serverless (Knative) exposes one port per container"
            for component in ("predictor", "transformer"):
                if component in spec:
                    container_ports = [
                        p["containerPort"] for p in spec[component]["containers"][0].get("ports", [])
                    ]
                    ports[f"{name}-{component}"] = {80, *container_ports[1:]}
        elif kind == "RayService":
            head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
            ports[f"{name}-serve-svc"] = {p["containerPort"] for p in head["ports"] if p["name"] == "serve"}
            ports[f"{name}-head-svc"] = {p["containerPort"] for p in head["ports"]}
    return ports


def _host_port(value: str) -> tuple[str, int] | None:
    value = re.sub(r"^s3://(?=https?://)", "", value)  # Triton's s3://https://host:port/... form
    if "://" in value:
        parts = urlsplit(value)
        if not parts.hostname:
            return None
        return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]
    match = re.fullmatch(r"([a-z0-9.-]+):(\d+)", value)
    return (match.group(1), int(match.group(2))) if match else None


def dial_targets(docs: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(where configured, host, port) from every container's env and Triton's URL arguments."""
    found = []
    for owner, spec in pod_specs(docs):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if DIAL_ENV.search(env["name"]) and "value" in env:
                    target = _host_port(env["value"])
                    if target:
                        found.append((f"{owner} {env['name']}", *target))
            for arg in container.get("args", []):
                url = re.search(r"(?:url=|--model-repository=)(\S+://\S+)", arg)
                if url:
                    target = _host_port(url.group(1))
                    if target:
                        found.append((f"{owner} {arg}", *target))
    return found


def _in_release(host: str) -> str | None:
    """The Service name when `host` names a Service in the release namespace, else None."""
    parts = host.split(".")
    if len(parts) == 1:
        return host
    if len(parts) >= 3 and parts[1] == NAMESPACE and parts[2] == "svc":
        return parts[0]
    return None


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_every_dial_target_is_a_service_port(values: Path) -> None:
    docs = render(str(values))
    ports = service_ports(docs)
    targets = dial_targets(docs)
    assert any(where.endswith("SIGHTLINE_GATEWAY_DEID_URL") for where, _, _ in targets)
    unresolved = [
        f"{where} -> {host}:{port} (service ports: {sorted(ports.get(name, set())) or 'no such Service'})"
        for where, host, port in targets
        if (name := _in_release(host)) is not None and port not in ports.get(name, set())
    ]
    assert not unresolved, "\n".join(unresolved)


def test_inferenceservice_is_release_scoped() -> None:
    """Two releases in one namespace must not fight over one InferenceService."""
    names = set()
    for release in ("alpha", "beta"):
        out = run_helm("template", release, str(CHART), "-f", str(CHART / "ci" / "kserve-values.yaml")).stdout
        names |= set(re.findall(r"kind: InferenceService\nmetadata:\n  name: (\S+)", out))
    assert len(names) == 2, names
