"""charts/sightline: the custom resources' structure (KubeRay ray.io/v1, KServe v1beta1, Prometheus
Operator v1). Their CRD schemas are not available offline, so these check the fields each operator
requires, over every ci value set (test_custom_resources.py validates the KEDA and Prometheus
Operator kinds against their pinned CRD validators)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from .conftest import CI_VALUES, RELEASE, render

pytestmark = pytest.mark.charts


def _custom(kind: str) -> list[dict[str, Any]]:
    docs = [d for values in CI_VALUES for d in render(str(values)) if d["kind"] == kind]
    assert docs, f"no ci value set renders a {kind}"
    return docs


def test_rayservice_structure() -> None:
    for doc in _custom("RayService"):
        assert doc["apiVersion"] == "ray.io/v1"
        spec = doc["spec"]
        serve = yaml.safe_load(spec["serveConfigV2"])
        assert serve["applications"][0]["import_path"].count(":") == 1
        assert serve["http_options"]["port"] == 8030
        cluster = spec["rayClusterConfig"]
        assert cluster["rayVersion"] == "2.60.0"
        head = cluster["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict)
        head_ports = {
            p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]
        }
        assert head_ports["serve"] == 8030 and head_ports["gcs-server"] == 6379
        for group in cluster["workerGroupSpecs"]:
            assert {"groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"} <= group.keys()
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_inferenceservice_structure() -> None:
    for doc in _custom("InferenceService"):
        assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
        # Release-scoped; preprocess takes Triton's model name from its env, not from the name.
        assert doc["metadata"]["name"] == f"{RELEASE}-derm-cnn"
        assert doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in {
            "RawDeployment",
            "Serverless",
        }
        predictor, transformer = doc["spec"]["predictor"], doc["spec"]["transformer"]
        triton = predictor["containers"][0]
        assert triton["command"] == ["tritonserver"] and "--load-model=derm-cnn" in triton["args"]
        assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        pre = transformer["containers"][0]
        assert pre["command"] == ["python", "-m", "sightline_preprocess"]
        env = {e["name"]: e.get("value") for e in pre["env"]}
        # KServe's predictor Service maps port 80 to the first container port: Triton's gRPC.
        assert env["SIGHTLINE_PREPROCESS_TRITON_GRPC"] == f"{RELEASE}-derm-cnn-predictor:80"
        assert triton["ports"][0]["containerPort"] == 8001
        assert json.loads(env["SIGHTLINE_PREPROCESS_MODELS"]) == ["derm-cnn"]


def test_servicemonitor_structure() -> None:
    for doc in _custom("ServiceMonitor"):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        labels = doc["spec"]["selector"]["matchLabels"]
        assert labels.get("app.kubernetes.io/component") or labels["component"] == "predictor"
        for endpoint in doc["spec"]["endpoints"]:
            assert endpoint["port"] in {"http", "metrics"} and endpoint["path"] == "/metrics"


def test_prometheusrule_structure() -> None:
    for doc in _custom("PrometheusRule"):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        for group in doc["spec"]["groups"]:
            assert group["name"] and group["rules"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule) and rule["expr"]
