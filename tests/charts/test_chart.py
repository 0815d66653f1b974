"""charts/sightline: lint, render over the ci value sets, validate, scan and snapshot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.conftest import skip_or_fail_in_ci

from .conftest import CHART, CI_VALUES, RELEASE, ROOT, pod_specs, render, render_text, run_helm

pytestmark = pytest.mark.charts

# Two ends of the supported range (Chart.yaml kubeVersion >=1.27) plus the newest schema offline.
KUBERNETES_VERSIONS = ["1.27.0", "1.30.0", "1.33.0"]
CUSTOM_KINDS = {
    ("ray.io/v1", "RayService"),
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
SNAPSHOTS = Path(__file__).parent / "snapshots"
CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
#: The defaults plus the settings a production install must give (auth.*).
DEFAULT = str(CHART / "ci" / "default-values.yaml")


def test_ci_value_sets_cover_the_matrix() -> None:
    assert {"default", "gpu", "cpu", "kserve", "network-policies", "external-s3-database"} <= set(CI_IDS)


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_lint_strict(values: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bare_chart_names_the_missing_setting() -> None:
    """The bare chart is a production install without its identity provider: `helm template` and
    `helm install` refuse it, saying so (lint downgrades `fail` to an INFO line, as Helm does)."""
    result = run_helm("template", RELEASE, str(CHART), check=False)
    assert result.returncode != 0 and "auth.jwksUrl" in result.stderr
    lint = run_helm("lint", "--strict", str(CHART), check=False)
    assert "auth.jwksUrl is required" in lint.stdout + lint.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_manifests_validate(values: Path, version: str) -> None:
    """Every built-in object passes kubernetes-validate --strict (unknown fields refused)."""
    errors = []
    for doc in render(str(values)):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_every_kind_is_known() -> None:
    """No object of a kind that neither kubernetes-validate nor the structural checks cover."""
    rendered: set[tuple[str, str]] = set()
    unknown: set[tuple[str, str]] = set()
    for values in CI_VALUES:
        for doc in render(str(values)):
            kind = (doc["apiVersion"], doc["kind"])
            rendered.add(kind)
            if kind in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unknown.add(kind)
    assert not unknown, f"no schema and no structural check for {sorted(unknown)}"
    assert CUSTOM_KINDS <= rendered, f"structural checks of kinds never rendered: {CUSTOM_KINDS - rendered}"


def test_prometheus_rule_copies_match_infra() -> None:
    """Rule files under infra/prometheus/rules/ are shipped by the chart as exact copies."""
    infra = sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.yaml"))
    if not infra:
        skip_or_fail_in_ci("no infra/prometheus/rules/*.yaml")
    stale = [
        p.name
        for p in infra
        if not (CHART / "files" / "prometheus-rules" / p.name).is_file()
        or (CHART / "files" / "prometheus-rules" / p.name).read_bytes() != p.read_bytes()
    ]
    assert not stale, f"copy to charts/sightline/files/prometheus-rules/: {stale}"


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_every_container_is_locked_down(values: Path) -> None:
    """Non-root, read-only root filesystem, no capabilities, seccomp, resources: in every value set."""
    for name, spec in pod_specs(render(str(values))):
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            assert container["resources"]["limits"]["memory"], where
            assert container["resources"]["requests"]["cpu"], where


def _by(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_services_probe_health_endpoints_and_run_their_module() -> None:
    docs = render(DEFAULT)
    for name in ("gateway", "deid", "preprocess", "explain"):
        container = _by(docs, "Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"sightline_{name}"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        env = {e["name"]: e for e in container["env"]}
        assert env[f"SIGHTLINE_{name.upper()}_HOST"]["value"] == "0.0.0.0"
        assert env[f"SIGHTLINE_{name.upper()}_ENVIRONMENT"]["value"] == "production"
        assert env["SIGHTLINE_OTEL_EXPORTER"]["value"] == "otlp-grpc"
    gateway = _by(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["SIGHTLINE_GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "sightline-database"
    deid = _by(docs, "Deployment", f"{RELEASE}-deid")["spec"]["template"]["spec"]["containers"][0]
    key = next(e for e in deid["env"] if e["name"] == "SIGHTLINE_DEID_PSEUDONYM_KEY")
    assert "valueFrom" in key, "the pseudonym key must come from a Secret"
    # The recipe the chart names is one the deid image ships (else the service refuses to start).
    recipe = next(e["value"] for e in deid["env"] if e["name"] == "SIGHTLINE_DEID_RECIPE")
    recipes = Path(__file__).resolve().parents[2] / "services/deid/src/sightline_deid/resources/recipes"
    assert (recipes / f"{recipe}.yaml").is_file(), f"deid recipe {recipe!r} is not shipped"


def test_gateway_gets_the_oidc_provider_in_production() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    gateway = _by(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["SIGHTLINE_GATEWAY_JWKS_URL"].startswith("https://")
    assert env["SIGHTLINE_GATEWAY_JWT_ISSUER"] and env["SIGHTLINE_GATEWAY_JWT_AUDIENCE"] == "sightline"


def test_triton_gpu_shm_probes_and_ports() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    spec = _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu" and spec["nodeSelector"]
    assert {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    scaled = _by(docs, "ScaledObject", f"{RELEASE}-triton")
    assert scaled["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-triton"


def test_triton_cpu_fallback_and_model_sources() -> None:
    cpu = _by(render(str(CHART / "ci" / "cpu-values.yaml")), "Deployment", f"{RELEASE}-triton")
    container = cpu["spec"]["template"]["spec"]["containers"][0]
    assert "--model-config-name=local" in container["args"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    s3 = _by(
        render(str(CHART / "ci" / "external-s3-database-values.yaml")), "Deployment", f"{RELEASE}-triton"
    )
    args = s3["spec"]["template"]["spec"]["containers"][0]["args"]
    assert (
        "--model-repository=s3://https://s3.eu-west-1.amazonaws.com:443/hospital-sightline-prod/model_repository"
        in args
    )
    vol = _by(
        render(
            DEFAULT, "triton.modelRepository.source=volume", "triton.modelRepository.volume.claimName=models"
        ),
        "Deployment",
        f"{RELEASE}-triton",
    )
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in vol["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["models"]


def test_every_routed_model_is_loaded_by_triton_and_served_by_preprocess_and_explain() -> None:
    """routing.models (the cpu set: both reference models) reaches Triton, preprocess and explain."""
    docs = render(str(CHART / "ci" / "cpu-values.yaml"))
    both = ["derm-cnn", "cxr-pneumonia"]
    triton = _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in triton["args"] if a.startswith("--load-model=")] == [f"--load-model={m}" for m in both]
    for name, variable in (
        ("gateway", "SIGHTLINE_GATEWAY_MODELS"),
        ("preprocess", "SIGHTLINE_PREPROCESS_MODELS"),
        ("explain", "SIGHTLINE_EXPLAIN_MODELS"),
    ):
        container = _by(docs, "Deployment", f"{RELEASE}-{name}")["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert json.loads(env[variable]) == both, name


def test_network_policies_deny_by_default_and_allow_only_architecture_flows() -> None:
    docs = render(str(CHART / "ci" / "network-policies-values.yaml"))
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    deny = policies[f"{RELEASE}-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny

    def callers(target: str) -> set[str]:
        found = set()
        for rule in policies[f"{RELEASE}-{target}"]["ingress"]:
            for peer in rule["from"]:
                component = (
                    peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                )
                if component and "namespaceSelector" not in peer:
                    found.add(component)
        return found

    assert callers("gateway") == {"test", "receiver"}  # plus the ingress controller namespace
    assert callers("deid") == {"gateway"}
    assert callers("preprocess") == {"gateway"}
    assert callers("explain") == {"gateway", "explain"}  # Ray head <-> workers
    assert callers("triton") == {"preprocess"}
    triton_ports = {p["port"] for r in policies[f"{RELEASE}-triton"]["ingress"] for p in r.get("ports", [])}
    assert triton_ports == {8000, 8001, 8002}
    deid_egress = policies[f"{RELEASE}-deid"]["egress"]
    assert {p["port"] for r in deid_egress for p in r["ports"]} == {53, 4317}, (
        "deid talks only to DNS and OTel"
    )
    db_rule = [
        r
        for r in policies[f"{RELEASE}-gateway"]["egress"]
        if r["ports"] == [{"protocol": "TCP", "port": 5432}]
    ]
    assert db_rule and db_rule[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]


def test_pdb_hpa_ingress_tls_and_helm_test() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in ("gateway", "deid", "preprocess", "triton"):
        assert ("PodDisruptionBudget", f"{RELEASE}-{name}") in kinds
    for name in ("gateway", "deid", "preprocess"):
        hpa = _by(docs, "HorizontalPodAutoscaler", f"{RELEASE}-{name}")
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in _by(docs, "Deployment", f"{RELEASE}-{name}")["spec"]
    ingress = _by(docs, "Ingress", f"{RELEASE}-gateway")
    assert ingress["spec"]["tls"][0]["secretName"] == "sightline-tls"
    test_pod = _by(docs, "Pod", f"{RELEASE}-test")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = _by(docs, "ConfigMap", f"{RELEASE}-test")["data"]["helm-test.py"]
    assert "/health/ready" in script and "application/dicom" in script


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["components.gateway.port=eighty"], "Invalid type"),
        (["components.gateway.bogus=1"], "Additional property bogus is not allowed"),
        (["unknownTopLevel=1"], "Additional property unknownTopLevel is not allowed"),
        (["triton.modelRepository.source=ftp"], "triton.modelRepository.source"),
        (["triton.gpu.count=0"], "triton.gpu.count"),
        (["kserve.deploymentMode=Knative"], "kserve.deploymentMode"),
        (["global.environment=staging"], "global.environment"),
        (["networkPolicy.enabled=yes"], "Invalid type"),
        (["components.gateway.uses={redis}"], "components.gateway.uses"),
        (["components.deid.env.lower_case=x"], "components.deid.env"),
        (["objectStorage.bucket=Not_A_Bucket"], "objectStorage.bucket"),
        (["ingress.enabled=true", "ingress.tls=null"], "tls"),
    ],
)
def test_schema_refuses_bad_values(sets: list[str], message: str) -> None:
    args = ["template", RELEASE, str(CHART), "-f", DEFAULT]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args, check=False)
    assert result.returncode != 0, f"accepted {sets}"
    assert message in result.stderr, result.stderr


def test_schema_describes_every_property() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} is not strict"
        for key, child in node.get("properties", {}).items():
            if "description" not in child:
                missing.append(f"{path}.{key}")
            walk(child, f"{path}.{key}")

    walk(schema, "")
    for name, definition in schema["definitions"].items():
        walk(definition, f"#{name}")
    assert not missing, missing


def _checkov() -> str | None:
    for candidate in (
        os.environ.get("CHECKOV"),
        str(ROOT / ".cache" / "checkov-venv" / "bin" / "checkov"),
        shutil.which("checkov"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_checkov_skips_have_reasons() -> None:
    skips = yaml.safe_load((Path(__file__).parent / "checkov-skips.yaml").read_text())
    assert all(isinstance(reason, str) and len(reason) > 40 for reason in skips.values()), skips


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_checkov_passes(values: Path, tmp_path: Path) -> None:
    """No failed checkov check except those skipped with a written reason (checkov-skips.yaml,
    or a checkov.io/skipN annotation on the object)."""
    checkov = _checkov()
    if checkov is None:
        skip_or_fail_in_ci("checkov not found: run scripts/get-checkov.sh (or set $CHECKOV)")
    skips = yaml.safe_load((Path(__file__).parent / "checkov-skips.yaml").read_text())
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render_text(str(values)))
    result = subprocess.run(
        [
            checkov,
            "-f",
            str(manifest),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
            "--skip-check",
            ",".join(skips),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    reports = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['check_name']} {c['resource']}"
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_snapshot(values: Path) -> None:
    """Rendered output is checked in, so a template change shows in review.
    Update with: UPDATE_SNAPSHOTS=1 pytest tests/charts -m charts"""
    snapshot = SNAPSHOTS / f"{values.name.removesuffix('-values.yaml')}.yaml"
    text = render_text(str(values))
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(text)
    assert snapshot.is_file(), f"missing {snapshot.name}: run with UPDATE_SNAPSHOTS=1"
    assert text == snapshot.read_text(), (
        f"{snapshot.name} differs: review, then rerun with UPDATE_SNAPSHOTS=1"
    )


def test_triton_traces_in_opentelemetry_mode_to_the_collector() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    args = _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--trace-config=mode=opentelemetry" in args
    assert any(a.startswith("--trace-config=opentelemetry,url=http") for a in args)
    policy = _by(docs, "NetworkPolicy", f"{RELEASE}-triton")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert 4318 in ports, "Triton's OTLP/HTTP export must be allowed out"
