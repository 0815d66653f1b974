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
_NUMBER = re.compile(r"(?<![a-zA-Z0-9_:])(\d+(ms|s|m|h|d|w|y)|\d*\.?\d+([eE][+-]?\d+)?)(?![a-zA-Z0-9_:])")
#: PromQL words that are neither a function call nor a metric: set and comparison operators, modifiers.
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric and recording-rule names in a PromQL expression: each identifier not a function or keyword.

    Any name counts (not only sightline_*), so a misspelt prefix is caught as surely as a misspelt suffix.
    """
    text = _GROUPING.sub(" ", _MATCHERS.sub(" ", _STRING.sub(" ", expr)))
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = _NUMBER.sub(" ", text)
    return {
        m.group()
        for m in _TOKEN.finditer(text)
        if m.group().lower() not in _KEYWORDS and not text[m.end() :].lstrip().startswith("(")
    }


def _dashboard_exprs(folder: Path = DASHBOARDS) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        exprs += [v["query"] for v in board["templating"]["list"] if v.get("type") == "query"]
        # label_values(selector, label): the selector (its matchers may hold commas too)
        found[path.name] = [re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", e) for e in exprs]
    return found


def test_metric_name_extraction() -> None:
    expr = 'sum by (service) (rate(sightline_x_bucket{route=~"/v1/.*", le="2.5"}[5m])) / on (a) up unless b:c'
    assert metric_names(expr) == {"sightline_x_bucket", "up", "b:c"}
    expr = (
        'max by (m, t) (a_x{k="v"}) * 0 + on (m) group_left max by (m) (b_y) - 1e6 > bool 0.5 '
        "and histogram_quantile(0.95, sum by (le) (rate(c_z[$__rate_interval] offset 1h)))"
    )
    assert metric_names(expr) == {"a_x", "b_y", "c_z"}


def _used(dashboards: Path = DASHBOARDS) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for rule in _rules():
        used.setdefault(f"rule {rule.get('alert') or rule.get('record')}", set()).update(
            metric_names(str(rule["expr"]))
        )
    for name, exprs in _dashboard_exprs(dashboards).items():
        for expr in exprs:
            used.setdefault(f"dashboard {name}", set()).update(metric_names(expr))
    return used


def _unknown(used: dict[str, set[str]], exported: set[str]) -> dict[str, list[str]]:
    recorded = {str(r["record"]) for r in _rules() if "record" in r}
    unknown = {
        where: sorted(n for n in names if n not in exported and n not in recorded and n not in PENDING)
        for where, names in used.items()
    }
    return {k: v for k, v in unknown.items() if v}


def test_dashboards_and_rules_use_exported_metrics(exported: set[str]) -> None:
    used = _used()
    assert any(used.values())
    unknown = _unknown(used, exported)
    assert not unknown, f"metrics used but not exported by any service: {unknown}"
    all_used = set().union(*used.values())
    assert {
        "sightline_drift_psi",
        "sightline_model_score_bucket",
        "sightline_model_decisions_total",
        "sightline_review_verdicts_total",
        "sightline_stage_duration_seconds_bucket",
        "nv_inference_count",
        "sightline_realworld_estimate",
        "sightline_realworld_cases",
        "sightline_realworld_calibration_gap",
        "sightline_model_claimed",
        "sightline_outcomes_total",
    } <= all_used


@pytest.mark.parametrize(
    ("expr", "missing"),
    [
        (
            'max by (tenant) (sightline_realworld_sensitivity{bound="lower"})',
            "sightline_realworld_sensitivity",
        ),
        ("sightline_realworld_cases / sightline_realworld_case", "sightline_realworld_case"),
        ("max by (model) (sightlin_model_claimed)", "sightlin_model_claimed"),
        ('label_values(sightline_realworld_tenants{model=~"$model"}, tenant)', "sightline_realworld_tenants"),
    ],
)
def test_a_panel_naming_an_unknown_metric_fails(
    exported: set[str], tmp_path: Path, expr: str, missing: str
) -> None:
    """The check reads every generated dashboard: one panel (or variable) naming a missing metric fails it."""
    board = json.loads((DASHBOARDS / "sightline-outcomes.json").read_text())
    if expr.startswith("label_values"):
        board["templating"]["list"].append({"name": "x", "type": "query", "query": expr})
    else:
        board["panels"].append({**board["panels"][-1], "targets": [{"refId": "A", "expr": expr}]})
    (tmp_path / "sightline-outcomes.json").write_text(json.dumps(board))
    assert _unknown(_used(tmp_path), exported) == {"dashboard sightline-outcomes.json": [missing]}


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel's query parses (promtool checks it as a recording rule, Grafana's variables filled in)."""
    tool = _promtool()
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
    rules = []
    for name, exprs in _dashboard_exprs().items():
        for i, expr in enumerate(exprs):
            for var, value in fill.items():
                expr = expr.replace(var, value)
            expr = re.sub(r"\$\w+", ".*", expr)
            rules.append(
                {"record": f"dashboard:{name.removesuffix('.json').replace('-', '_')}:q{i}", "expr": expr}
            )
    path = tmp_path / "dashboards.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


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
