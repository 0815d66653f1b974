"""NetworkPolicies, evaluated over the rendered objects: every flow the system needs is allowed and
the flows that must not happen are denied, for every ci value set (issue 14, findings 2 and 3).

Pods get the labels their controllers give them: a Deployment's, Job's or Pod's template labels;
KubeRay adds ray.io/node-type to the RayService's head and worker templates; KServe labels the
InferenceService's pods with the InferenceService's own labels plus
serving.kserve.io/inferenceservice=<name> and component=predictor|transformer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, CI_VALUES, NAMESPACE, render
from .netpol import External, Pod, allowed

pytestmark = pytest.mark.charts

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]

INGRESS_CONTROLLER = Pod.of(
    "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}, "ingress-controller"
)
PROMETHEUS = Pod.of("monitoring", {"app.kubernetes.io/name": "prometheus"}, "prometheus")
KUBERAY_OPERATOR = Pod.of(
    "kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}, "kuberay-operator"
)
KUBE_DNS = Pod.of("kube-system", {"k8s-app": "kube-dns"}, "kube-dns")
OTHER_NAMESPACE = Pod.of("tenant-b", {"app": "curious"}, "pod in another namespace")
PUBLIC = External("198.51.100.7", "a public address")
METADATA = External("169.254.169.254", "cloud metadata")

# Where each external dependency really is, for each value set (what its endpoint resolves to).
MINIO_NS = Pod.of("storage", {"app.kubernetes.io/name": "minio"}, "MinIO in namespace storage")
COLLECTOR_NS = Pod.of("observability", {"app.kubernetes.io/name": "opentelemetry-collector"}, "Collector")
IDP = External("203.0.113.10", "identity provider")
DESTINATIONS: dict[str, dict[str, Pod | External]] = {
    "default": {"database": External("10.30.4.10"), "objectStorage": MINIO_NS, "otel": COLLECTOR_NS},
    "gpu": {"database": External("10.30.4.10"), "objectStorage": MINIO_NS, "otel": COLLECTOR_NS},
    "kserve": {"database": External("172.20.1.5"), "objectStorage": MINIO_NS, "otel": COLLECTOR_NS},
    "network-policies": {"database": External("10.20.0.10"), "objectStorage": MINIO_NS, "otel": COLLECTOR_NS},
    "external-s3-database": {
        "database": External("10.30.4.10"),
        "objectStorage": External("52.218.0.10", "AWS S3"),
        "otel": COLLECTOR_NS,
    },
}


def _pods(docs: list[dict[str, Any]]) -> dict[str, Pod]:
    """Rendered workloads by role: component name, explain-head/explain-worker, test, ..."""
    pods: dict[str, Pod] = {}
    for doc in docs:
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind in ("Deployment", "Job"):
            labels = spec["template"]["metadata"]["labels"]
            pods[labels["app.kubernetes.io/component"]] = Pod.of(NAMESPACE, labels)
        elif kind == "Pod":
            labels = doc["metadata"]["labels"]
            pods[labels["app.kubernetes.io/component"]] = Pod.of(NAMESPACE, labels)
        elif kind == "RayService":
            cluster = spec["rayClusterConfig"]
            head = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
            pods["explain-head"] = Pod.of(NAMESPACE, {**head, "ray.io/node-type": "head"})
            worker = cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
            pods["explain-worker"] = Pod.of(NAMESPACE, {**worker, "ray.io/node-type": "worker"})
        elif kind == "InferenceService":
            name = doc["metadata"]["name"]
            for role, component in (("predictor", "triton"), ("transformer", "preprocess")):
                labels = {
                    **doc["metadata"].get("labels", {}),
                    "serving.kserve.io/inferenceservice": name,
                    "component": role,
                }
                pods[component] = Pod.of(NAMESPACE, labels)
    return pods


def _values(values: Path) -> dict[str, Any]:
    return yaml.safe_load(values.read_text()) or {}


Flow = tuple[Any, Any, int, str]


def _flows(values: Path, docs: list[dict[str, Any]]) -> tuple[list[Flow], list[Flow]]:
    """(flows that must be allowed, flows that must be denied) for one value set."""
    pods = _pods(docs)
    vid = values.name.removesuffix("-values.yaml")
    where: dict[str, Any] = dict(DESTINATIONS.get(vid, {}))
    for dep, component in (
        ("database", "postgresql"),
        ("objectStorage", "minio"),
        ("otel", "otel-collector"),
    ):
        if component in pods:
            where[dep] = pods[component]
    ports = {"database": 5432, "objectStorage": 9000, "otel": 4317}
    if vid == "external-s3-database":
        ports["objectStorage"] = 443
    explain = [pods[k] for k in ("explain", "explain-head", "explain-worker") if k in pods]
    gw = pods["gateway"]
    need: list[Flow] = [
        (INGRESS_CONTROLLER, gw, 8080, "ingress controller -> gateway"),
        (gw, pods["deid"], 8020, "gateway -> deid"),
        (gw, pods["preprocess"], 8080, "gateway -> preprocess HTTP"),
        (gw, pods["preprocess"], 8081, "gateway -> preprocess gRPC"),
        (gw, where["database"], ports["database"], "gateway -> database"),
        (gw, where["objectStorage"], ports["objectStorage"], "gateway -> object storage"),
        (gw, IDP, 443, "gateway -> identity provider (JWKS)"),
        (pods["preprocess"], pods["triton"], 8001, "preprocess -> Triton gRPC"),
    ]
    need += [
        (gw, pod, 8030, f"gateway -> explain Serve ({pod.name})")
        for pod in explain
        if "worker" not in pod.name
    ]
    need += [
        (pod, where["objectStorage"], ports["objectStorage"], "explain -> object storage") for pod in explain
    ]
    if "explain-head" in pods:
        head, worker = pods["explain-head"], pods["explain-worker"]
        need += [
            (KUBERAY_OPERATOR, head, 8265, "KubeRay operator -> Ray dashboard (Serve status)"),
            (worker, head, 6379, "Ray worker -> GCS"),
            (head, worker, 10002, "Ray head -> worker"),
        ]
    if "test" in pods:
        need.append((pods["test"], gw, 8080, "helm test -> gateway"))
    if "migrate" in pods:
        need.append((pods["migrate"], where["database"], ports["database"], "migration Job -> database"))
    triton_values = _values(values).get("triton", {})
    if (triton_values.get("modelRepository") or {}).get("source") == "objectStorage":
        need.append(
            (pods["triton"], where["objectStorage"], ports["objectStorage"], "Triton -> model repository")
        )
    ours = [(name, pod) for name, pod in pods.items()]
    for name, pod in ours:
        need.append((pod, KUBE_DNS, 53, f"{name} -> DNS"))
        if name in ("gateway", "deid", "preprocess", "explain", "explain-head", "explain-worker"):
            need.append((pod, where["otel"], 4317, f"{name} -> OTel Collector"))
    metrics = {"gateway": 8080, "deid": 8020, "preprocess": 8080, "explain": 8030, "triton": 8002}
    metrics |= {"explain-head": 8080, "explain-worker": 8080}
    need += [
        (PROMETHEUS, pods[n], port, f"Prometheus -> {n} /metrics") for n, port in metrics.items() if n in pods
    ]

    deny: list[Flow] = [
        (pods["deid"], where["database"], ports["database"], "deid -> database"),
        (pods["deid"], where["objectStorage"], ports["objectStorage"], "deid -> object storage"),
        (pods["deid"], PUBLIC, 443, "deid -> internet"),
        (pods["triton"], where["database"], ports["database"], "Triton -> database"),
        (pods["preprocess"], where["database"], ports["database"], "preprocess -> database"),
        (gw, PUBLIC, 5432, "gateway -> any address on the database port"),
        (gw, PUBLIC, 9000, "gateway -> any address on the S3 port"),
        (gw, PUBLIC, 4317, "gateway -> any address on the OTLP port"),
        (gw, METADATA, 80, "gateway -> cloud metadata"),
        (pods["deid"], METADATA, 80, "deid -> cloud metadata"),
        (INGRESS_CONTROLLER, pods["deid"], 8020, "ingress controller -> deid"),
        (OTHER_NAMESPACE, gw, 8080, "another namespace -> gateway"),
        (OTHER_NAMESPACE, pods["triton"], 8001, "another namespace -> Triton"),
        (pods["deid"], pods["triton"], 8001, "deid -> Triton"),
    ]
    deny += [(pod, where["database"], ports["database"], "explain -> database") for pod in explain]
    if "test" in pods:
        deny.append((pods["test"], where["database"], ports["database"], "helm test -> database"))
        deny.append((pods["test"], pods["deid"], 8020, "helm test -> deid"))
    if "migrate" in pods:
        deny.append(
            (
                pods["migrate"],
                where["objectStorage"],
                ports["objectStorage"],
                "migration Job -> object storage",
            )
        )
        deny.append((pods["migrate"], PUBLIC, 443, "migration Job -> internet"))
    if "receiver" in pods:
        receiver = pods["receiver"]
        need += [
            (External("10.40.3.7", "modality"), receiver, 11112, "modality -> receiver DICOM"),
            (receiver, gw, 8080, "receiver -> gateway STOW-RS"),
            (receiver, KUBE_DNS, 53, "receiver -> DNS"),
        ]
        deny += [
            (External("198.51.100.9"), receiver, 11112, "internet -> receiver DICOM"),
            (receiver, where["database"], ports["database"], "receiver -> database"),
            (receiver, pods["deid"], 8020, "receiver -> deid"),
        ]
    if "postgresql" in pods:
        deny.append((pods["deid"], pods["postgresql"], 5432, "deid -> in-chart PostgreSQL"))
    return need, deny


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_needed_flows_are_allowed_and_forbidden_flows_denied(values: Path) -> None:
    docs = render(str(values))
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policies, "NetworkPolicies are on in every ci value set"
    need, deny = _flows(values, docs)
    blocked = [
        what
        for src, dst, port, what in need
        if not (allowed(policies, src, dst, port, "UDP") if port == 53 else allowed(policies, src, dst, port))
    ]
    leaks = [what for src, dst, port, what in deny if allowed(policies, src, dst, port)]
    assert not blocked and not leaks, f"needed flows blocked: {blocked}; forbidden flows allowed: {leaks}"


def test_node_local_dns_peers_reach_every_pod() -> None:
    """NodeLocal DNSCache answers on a link-local address: settable as networkPolicy.dnsPeers."""
    docs = render(
        str(CHART / "ci" / "network-policies-values.yaml"),
        "networkPolicy.dnsPeers[0].ipBlock.cidr=169.254.20.10/32",
    )
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    node_local = External("169.254.20.10", "node-local-dns")
    for name, pod in _pods(docs).items():
        assert allowed(policies, pod, node_local, 53, "UDP"), name


def test_evaluator_semantics() -> None:
    """The evaluator itself: isolation, peers, ports, ipBlock except."""
    a = Pod.of("ns", {"app": "a"})
    b = Pod.of("ns", {"app": "b"})
    policy = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 80}]}],
        },
    }
    egress = {
        "metadata": {"name": "e", "namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
        },
    }
    assert allowed([policy], a, b, 80) and not allowed([policy], a, b, 81)
    assert not allowed([policy], Pod.of("other", {"app": "a"}), b, 80)
    assert allowed([egress], a, External("10.2.0.1"), 5432)
    assert not allowed([egress], a, External("10.1.0.1"), 5432)
    assert not allowed([egress], a, b, 80), "ipBlock never matches pods"


def test_helm_test_pod_pulls_from_a_private_registry() -> None:
    docs = render(str(CHART / "ci" / "default-values.yaml"), "global.imagePullSecrets[0].name=regcred")
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
