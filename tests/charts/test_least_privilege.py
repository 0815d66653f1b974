"""Model pull over TLS with a region and room to land (finding 7); least privilege (finding 9):
a ServiceAccount per component, optional workload-identity annotations, Triton reads the model
repository with its own (read-only) credentials or none, and /metrics is not on the Ingress."""

from __future__ import annotations

import pytest

from .conftest import CHART, RELEASE, pod_specs, render, run_helm

pytestmark = pytest.mark.charts

DEFAULT = str(CHART / "ci" / "default-values.yaml")
S3 = str(CHART / "ci" / "external-s3-database-values.yaml")
GPU = str(CHART / "ci" / "gpu-values.yaml")


def _by(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _triton(docs: list[dict]) -> dict:
    return _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]


def _bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(q[:-2]) * units[q[-2:]] if q[-2:] in units else float(q)


def test_s3_model_repository_over_tls_with_region_and_room() -> None:
    spec = _triton(render(S3))
    container = spec["containers"][0]
    repo = next(a for a in container["args"] if a.startswith("--model-repository="))
    # Triton's S3 client speaks plain HTTP to s3://host:port/...; TLS needs s3://https://host:port/...
    assert (
        repo
        == "--model-repository=s3://https://s3.eu-west-1.amazonaws.com:443/hospital-sightline-prod/model_repository"
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    tmp = next(v for v in spec["volumes"] if v["name"] == "tmp")
    assert _bytes(tmp["emptyDir"]["sizeLimit"]) >= 2 * 2**30, "Triton copies the repository into /tmp"


def test_plain_http_s3_stays_plain_for_in_chart_minio() -> None:
    docs = render(str(CHART / "ci" / "cpu-values.yaml"), "triton.modelRepository.source=objectStorage")
    repo = next(a for a in _triton(docs)["containers"][0]["args"] if a.startswith("--model-repository="))
    assert repo.startswith(f"--model-repository=s3://{RELEASE}-minio:9000/")


def test_metrics_are_not_published_through_the_ingress() -> None:
    ingress = _by(render(GPU), "Ingress", f"{RELEASE}-gateway")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            p, kind = path["path"], path["pathType"]
            covers = "/metrics" == p or (kind == "Prefix" and ("/metrics/".startswith(p.rstrip("/") + "/")))
            assert not covers, f"Ingress path {p} ({kind}) serves the gateway's /metrics publicly"


def test_an_ingress_path_covering_metrics_is_refused() -> None:
    result = run_helm(
        "template", RELEASE, str(CHART), "-f", GPU, "--set", "ingress.hosts[0].paths[0].path=/", check=False
    )
    assert result.returncode != 0 and "ingress.hosts" in result.stderr and "/metrics" in result.stderr


def test_one_service_account_per_component() -> None:
    docs = render(
        S3,
        "components.gateway.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/gw",
    )
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    used = {}
    for owner, spec in pod_specs(docs):
        used[owner] = spec["serviceAccountName"]
    assert used[f"{RELEASE}-gateway"] == f"{RELEASE}-gateway"
    assert used[f"{RELEASE}-triton"] == f"{RELEASE}-triton"
    assert len({used[f"{RELEASE}-{n}"] for n in ("gateway", "deid", "preprocess", "explain", "triton")}) == 5
    assert set(used.values()) <= set(accounts)
    gw = accounts[f"{RELEASE}-gateway"]["metadata"]["annotations"]
    assert gw["eks.amazonaws.com/role-arn"] == "arn:aws:iam::1:role/gw"


def test_triton_never_gets_the_services_read_write_keys() -> None:
    for values in (S3, str(CHART / "ci" / "kserve-values.yaml")):
        docs = render(values)
        rw = next(
            e["valueFrom"]["secretKeyRef"]["name"]
            for _, spec in pod_specs(docs)
            for c in spec["containers"]
            for e in c.get("env", [])
            if e["name"] == "SIGHTLINE_GATEWAY_S3_ACCESS_KEY"
        )
        for owner, spec in pod_specs(docs):
            if "triton" in owner or owner.endswith("/predictor"):
                refs = {
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for c in spec["containers"]
                    for e in c.get("env", [])
                    if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
                }
                assert rw not in refs, f"{owner} reads {rw}"


def test_triton_can_pull_with_workload_identity_and_no_keys() -> None:
    docs = render(
        S3,
        "triton.modelRepository.credentials.existingSecret=",
        "triton.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/models-ro",
    )
    env = {e["name"] for e in _triton(docs)["containers"][0].get("env", [])}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env
    sa = _by(docs, "ServiceAccount", f"{RELEASE}-triton")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("models-ro")
