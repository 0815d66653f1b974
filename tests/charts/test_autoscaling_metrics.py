"""Autoscaling and alerting work against what is really scraped (issue 14, finding 4).

- Every metric an HPA, KEDA ScaledObject or alert names is one Triton or a service exports, or a
  recording rule (the name extraction and Triton's scraped list are the metric-name test's,
  tests/unit/observability/test_metric_names.py; that test covers the rule files themselves).
- An HPA's Pods/Object/External metric needs an adapter nobody ships: the chart may only use
  Resource metrics in an HPA, and custom metrics through a KEDA ScaledObject it renders.
- Every `job` an alert selects is the job label of a ServiceMonitor's target (the Prometheus
  Operator takes it from the Service label named by `jobLabel`, else the Service name).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.observability.test_metric_names import _triton_names, metric_names

from .conftest import CHART, CI_VALUES, render

pytestmark = pytest.mark.charts

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
GPU = str(CHART / "ci" / "gpu-values.yaml")
KSERVE = str(CHART / "ci" / "kserve-values.yaml")


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_hpas_use_only_resource_metrics(values: Path) -> None:
    for hpa in _of(render(str(values)), "HorizontalPodAutoscaler"):
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Resource"}, (
            f"{hpa['metadata']['name']}: {kinds} needs an adapter the chart does not ship"
        )
        assert "behavior" in hpa["spec"], hpa["metadata"]["name"]


def test_triton_scales_on_its_own_queue_time_with_keda() -> None:
    docs = render(GPU)
    [scaled] = [
        d for d in _of(docs, "ScaledObject") if d["spec"]["scaleTargetRef"]["name"].endswith("-triton")
    ]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert not [h for h in _of(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"].endswith("-triton")]
    spec = scaled["spec"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "stabilizationWindowSeconds"
    ]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= metric_names(query)
    assert float(trigger["metadata"]["threshold"]) > 0


def test_kserve_gpu_predictor_scales_on_triton_metrics_not_cpu() -> None:
    docs = render(KSERVE, "triton.autoscaling.enabled=true")
    [isvc] = _of(docs, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    [scaled] = _of(docs, "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{isvc['metadata']['name']}-predictor"


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_every_scaling_and_alert_metric_is_exported(values: Path) -> None:
    docs = render(str(values), "triton.autoscaling.enabled=true")
    exported = _triton_names() | {"up"}
    recorded: set[str] = set()
    used: dict[str, set[str]] = {}
    for rule_doc in _of(docs, "PrometheusRule"):
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.add(rule["record"])
    for scaled in _of(docs, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            used[scaled["metadata"]["name"]] = metric_names(trigger["metadata"]["query"])
    unknown = {k: sorted(n for n in v if n not in exported | recorded) for k, v in used.items()}
    assert not {k: v for k, v in unknown.items() if v}, unknown


def _jobs(docs: list[dict[str, Any]]) -> set[str]:
    """Job labels of the ServiceMonitors' targets (Service label `jobLabel`, else Service name)."""
    services = {d["metadata"]["name"]: d for d in _of(docs, "Service")}
    jobs = set()
    for monitor in _of(docs, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        for name, svc in services.items():
            labels = svc["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in selector.items()):
                job_label = monitor["spec"].get("jobLabel")
                job = labels[job_label] if job_label and job_label in labels else name
                for endpoint in monitor["spec"]["endpoints"]:
                    for relabel in endpoint.get("relabelings", []):
                        if (
                            relabel.get("targetLabel") == "job"
                            and relabel.get("action", "replace") == "replace"
                        ):
                            job = relabel["replacement"]
                    jobs.add(job)
    return jobs


def test_alert_job_labels_match_a_servicemonitor() -> None:
    docs = render(GPU)
    jobs = _jobs(docs)
    assert jobs
    selected = []
    for rule_doc in _of(docs, "PrometheusRule"):
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                for op, value in re.findall(r'job\s*(=~|=)\s*"([^"]*)"', str(rule["expr"])):
                    pattern = value if op == "=~" else re.escape(value)
                    selected.append((rule.get("alert") or rule.get("record"), value))
                    assert any(re.fullmatch(pattern, j) for j in jobs), (
                        f"{rule.get('alert')}: job{op}{value!r} matches none of {sorted(jobs)}"
                    )
    assert ("TritonDown", "triton") in selected or any(v == "triton" for _, v in selected)
