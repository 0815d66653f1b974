# ruff: noqa: E501 - PromQL expressions read best unbroken
"""Grafana panel, dashboard and variable builders shared by the dashboards generate.py writes."""

from __future__ import annotations

from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(
    title: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    desc: str = "",
    w: int = 12,
    h: int = 8,
    defaults: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit} | (defaults or {}), "overrides": overrides or []},
        "targets": [
            {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            | ({"format": "heatmap"} if kind == "heatmap" else {})
            | ({"format": "table", "instant": True} if kind == "table" else {})
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "heatmap":
        p["options"] = {"calculate": False, "yAxis": {"unit": unit}}
    if kind == "table":
        # One row per series: instant queries merged on their labels, each query's value a column named by its legend.
        p["transformations"] = [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        f"Value #{chr(65 + i)}": legend for i, (_, legend) in enumerate(targets)
                    },
                },
            },
        ]
    return p


def threshold(value: float, color: str = "red") -> dict[str, Any]:
    """Field defaults that draw ``value`` as a dashed line (an alert's threshold) on a time series."""
    return {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": color, "value": value}],
        },
        "custom": {"thresholdsStyle": {"mode": "dashed"}},
    }


#: Interval bounds drawn as thin dashed lines beside the point estimate (series named "... 95% ...").
BOUNDS = [
    {
        "matcher": {"id": "byRegexp", "options": ".*95%.*"},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
            {"id": "custom.lineWidth", "value": 1},
        ],
    },
    {
        "matcher": {"id": "byRegexp", "options": "^claim .*"},
        "properties": [
            {"id": "custom.lineWidth", "value": 3},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ],
    },
]


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    *,
    since: str = "now-6h",
) -> dict[str, Any]:
    x = y = 0
    for i, p in enumerate(panels):
        p["id"] = i + 1
        if x + p["gridPos"]["w"] > 24:
            x, y = 0, y + 8
        p["gridPos"].update({"x": x, "y": y})
        x += p["gridPos"]["w"]
    return {
        "uid": uid,
        "title": title,
        "tags": ["sightline"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "time": {"from": since, "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                *variables,
            ]
        },
        "panels": panels,
    }


def query_var(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "label": label,
        "datasource": DS,
        "query": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
    }


#: The model/version filter of the model-level dashboards.
MV = 'model=~"$model", version=~"$version"'
