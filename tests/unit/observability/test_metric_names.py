"""Dashboards and alert rules only use metrics the services really export; promtool passes.

Exported names come from the default Prometheus registry of a fresh interpreter that imports
each service's modules (what its /metrics endpoint serves), plus Triton's families as scraped
from the real tritonserver (triton_metric_names.txt; re-checked by the integration test).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "infra" / "prometheus"
DASHBOARDS = ROOT / "infra" / "grafana" / "dashboards"
HERE = Path(__file__).resolve().parent

#: The modules whose import registers each service's metrics (their /metrics serves the default registry).
SERVICE_MODULES = [
    "sightline_common.metrics",
    "sightline_common.drift",
    "sightline_deid.app",
    "sightline_preprocess.model",
    "sightline_explain.metrics",
    "sightline_gateway.app",
]

#: Names the rules/dashboards already use that a service is still to export: name -> who.
PENDING = {
    "sightline_jobs_pending": "gateway: Gauge('sightline_jobs_pending', ..., ['service']): queued async jobs",
    "sightline_jobs_oldest_pending_age_seconds": (
        "gateway: Gauge('sightline_jobs_oldest_pending_age_seconds', ..., ['service']): oldest queued job"

    ),
}

_SCRAPE = """
import importlib, sys
from prometheus_client import REGISTRY
for name in sys.argv[1:]:
    importlib.import_module(name)
for family in REGISTRY.collect():
    print(family.name, family.type)
"""


def _service_families() -> dict[str, str]:
    paths = [
        str(ROOT / p)
        for p in (
            "src",
            "services/common/src",
            "services/gateway/src",
            "services/deid/src",
            "services/preprocess/src",
            "services/explain/src",
        )
    ]
    env = {"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRAPE, *SERVICE_MODULES],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def _sample_names(families: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for name, kind in families.items():
        if kind in ("histogram", "gaugehistogram"):
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "summary":
            names |= {name, f"{name}_count", f"{name}_sum"}
        elif kind == "counter":
            names |= {f"{name}_total", name}
        else:
            names.add(name)
    return names


def _triton_names() -> set[str]:
    lines = (HERE / "triton_metric_names.txt").read_text().splitlines()
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return _sample_names(_service_families()) | _triton_names() | {"up"}


def _rule_files() -> list[Path]:
    return sorted((PROM / "rules").glob("*.yaml"))


def _rules() -> list[dict[str, object]]:
    return [r for p in _rule_files() for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression (metrics named sightline_*, nv_*, up, a:b)."""
    text = _GROUPING.sub(" ", _MATCHERS.sub(" ", _STRING.sub(" ", expr)))
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    return {t for t in _TOKEN.findall(text) if t.startswith(("sightline_", "nv_")) or t == "up" or ":" in t}


def _dashboard_exprs() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        exprs += [v["query"] for v in board["templating"]["list"] if v.get("type") == "query"]
        found[path.name] = [re.sub(r"label_values\(([^,)]+).*", r"\1", e) for e in exprs]
    return found


def test_metric_name_extraction() -> None:
    expr = 'sum by (service) (rate(sightline_x_bucket{route=~"/v1/.*", le="2.5"}[5m])) / on (a) up unless b:c'
    assert metric_names(expr) == {"sightline_x_bucket", "up", "b:c"}


def test_dashboards_and_rules_use_exported_metrics(exported: set[str]) -> None:
    recorded = {str(r["record"]) for r in _rules() if "record" in r}
    used: dict[str, set[str]] = {}
    for rule in _rules():
        used.setdefault(f"rule {rule.get('alert') or rule.get('record')}", set()).update(
            metric_names(str(rule["expr"]))
        )
    for name, exprs in _dashboard_exprs().items():
        for expr in exprs:
            used.setdefault(f"dashboard {name}", set()).update(metric_names(expr))
    assert any(used.values())
    unknown = {
        where: sorted(n for n in names if n not in exported and n not in recorded and n not in PENDING)
        for where, names in used.items()
    }
    unknown = {k: v for k, v in unknown.items() if v}
    assert not unknown, f"metrics used but not exported by any service: {unknown}"
    all_used = set().union(*used.values())
    assert {
        "sightline_drift_psi",
        "sightline_model_score_bucket",
        "sightline_model_decisions_total",
        "sightline_review_verdicts_total",
        "sightline_stage_duration_seconds_bucket",
        "nv_inference_count",
    } <= all_used


def test_pending_metrics_are_exported(exported: set[str]) -> None:
    """Names the rules use ahead of the service that will export them: runs fully once they exist."""
    missing = {n: who for n, who in PENDING.items() if n not in exported}
    if missing:
        skip_or_fail_in_ci(f"used by rules or dashboards but exported by no service: {missing}")


def test_dashboards_are_generated_and_well_formed(tmp_path: Path) -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and board["uid"] and board["title"].startswith("Sightline")
        for p in board["panels"]:
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
    gen = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "grafana" / "generate.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gen.returncode == 0, gen.stderr
    for path in sorted(DASHBOARDS.glob("*.json")):
        assert (tmp_path / path.name).read_text() == path.read_text(), f"regenerate {path.name} (generate.py)"


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        skip_or_fail_in_ci("promtool not installed (scripts/get-prometheus.sh installs Debian's prometheus)")
    return tool


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", *map(str, _rule_files())], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    tests = sorted((PROM / "tests").glob("*.yaml"))
    assert tests
    out = subprocess.run(
        [_promtool(), "test", "rules", *[t.name for t in tests]],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROM / "tests",
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_config(tmp_path: Path) -> None:
    out = subprocess.run(
        [_promtool(), "check", "config", str(PROM / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_and_documented() -> None:
    tested = set()
    for path in (PROM / "tests").glob("*.yaml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", [])}
    for rule in _rules():
        if "alert" in rule:
            assert rule["alert"] in tested, f"no promtool test for {rule['alert']}"
            annotations = rule.get("annotations") or {}
            assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations)
            assert (rule.get("labels") or {}).get("severity") in ("critical", "warning"), rule["alert"]


def test_chart_ships_the_same_rules() -> None:
    chart = ROOT / "charts" / "sightline" / "files" / "prometheus-rules"
    for path in _rule_files():
        assert (chart / path.name).read_bytes() == path.read_bytes(), path.name
