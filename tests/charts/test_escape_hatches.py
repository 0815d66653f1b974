"""Every workload takes extraEnv, extraVolumes/extraVolumeMounts, podLabels and initContainers
(finding 10): e.g. mounting an in-house CA bundle for the identity provider without forking."""

from __future__ import annotations

import pytest

from .conftest import CHART, pod_specs, render

pytestmark = pytest.mark.charts

OWNERS = ["components.gateway", "components.deid", "components.preprocess", "components.explain", "triton"]


def _sets(prefix: str) -> list[str]:
    return [
        f"{prefix}.extraEnv[0].name=SSL_CERT_FILE",
        f"{prefix}.extraEnv[0].value=/etc/ssl/hospital/ca.pem",
        f"{prefix}.extraVolumes[0].name=hospital-ca",
        f"{prefix}.extraVolumes[0].configMap.name=hospital-ca",
        f"{prefix}.extraVolumeMounts[0].name=hospital-ca",
        f"{prefix}.extraVolumeMounts[0].mountPath=/etc/ssl/hospital",
        f"{prefix}.extraVolumeMounts[0].readOnly=true",
        f"{prefix}.podLabels.team=imaging",
        f"{prefix}.initContainers[0].name=wait",
        f"{prefix}.initContainers[0].image=busybox:1.36",
    ]


@pytest.mark.parametrize("values", ["default-values.yaml", "kserve-values.yaml"])
def test_every_workload_takes_the_escape_hatches(values: str) -> None:
    sets = [s for owner in OWNERS for s in _sets(owner)]
    docs = render(str(CHART / "ci" / values), *sets)
    labels_by_owner = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            labels_by_owner[doc["metadata"]["name"]] = doc["spec"]["template"]["metadata"]["labels"]
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            labels_by_owner[f"{doc['metadata']['name']}/head"] = cluster["headGroupSpec"]["template"][
                "metadata"
            ]["labels"]
    checked = []
    for owner, spec in pod_specs(docs):
        if owner.endswith("-test") or any(d in owner for d in ("postgresql", "minio", "otel-collector")):
            continue
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get("SSL_CERT_FILE") == "/etc/ssl/hospital/ca.pem", owner
        assert {"name": "hospital-ca", "configMap": {"name": "hospital-ca"}} in spec["volumes"], owner
        assert any(m["mountPath"] == "/etc/ssl/hospital" for m in container["volumeMounts"]), owner
        if not owner.endswith("-migrate"):
            assert spec["initContainers"][0]["name"] == "wait", owner
        if owner in labels_by_owner and not owner.endswith("-migrate"):
            assert labels_by_owner[owner]["team"] == "imaging", owner
        checked.append(owner)
    assert len(checked) >= 5, checked


def test_pod_labels_cannot_replace_selector_labels() -> None:
    docs = render(
        str(CHART / "ci" / "default-values.yaml"),
        "components.deid.podLabels.app\\.kubernetes\\.io/component=other",
    )
    deid = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-deid"))
    assert deid["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "deid"
