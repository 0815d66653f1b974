# ruff: noqa: E501 - PromQL expressions read best unbroken
"""Write the Grafana dashboards (dashboards/*.json) from one compact description.

Run ``python infra/grafana/generate.py`` after editing (or pass an output folder); tests check that every metric in the
JSON is one the services export. Grafana provisioning loads dashboards/ as-is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
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


SVC = 'service=~"$service"'
services = dashboard(
    "sightline-services",
    "Sightline / Services",
    [
        panel(
            "Request rate by service and route",
            [
                (
                    f"sum by (service, route) (rate(sightline_http_request_duration_seconds_count{{{SVC}}}[5m]))",
                    "{{service}} {{route}}",
                )
            ],
            unit="reqps",
        ),
        panel(
            "p95 request latency by service and route",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, service, route) (rate(sightline_http_request_duration_seconds_bucket{{{SVC}}}[5m])))",
                    "{{service}} {{route}}",
                )
            ],
            unit="s",
        ),
        panel(
            "p50 / p95 / p99 latency per pipeline stage",
            [
                (
                    f"histogram_quantile({q}, sum by (le, service, stage) (rate(sightline_stage_duration_seconds_bucket{{{SVC}}}[5m])))",
                    f"p{int(q * 100)} {{{{service}}}}/{{{{stage}}}}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
            w=24,
            desc="deid, preprocess transform, inference, explain (Grad-CAM), storage.",
        ),
        panel(
            "Latency SLO: share of API requests over 2.5 s (budget 1%)",
            [
                ("sightline:slo_latency_bad_ratio:rate1h", "{{service}} 1h"),
                ("sightline:slo_latency_bad_ratio:rate6h", "{{service}} 6h"),
            ],
            unit="percentunit",
        ),
        panel(
            "Server error ratio (5xx)",
            [("sightline:http_5xx_ratio:rate5m", "{{service}}")],
            unit="percentunit",
        ),
        panel(
            "Errors by kind",
            [(f"sum by (service, kind) (rate(sightline_errors_total{{{SVC}}}[5m]))", "{{service}} {{kind}}")],
            unit="ops",
        ),
        panel(
            "Requests in flight",
            [(f"sum by (service) (sightline_http_requests_in_flight{{{SVC}}})", "{{service}}")],
        ),
        panel(
            "De-identification outcomes",
            [("sum by (outcome) (rate(sightline_deid_requests_total[5m]))", "{{outcome}}")],
            unit="ops",
        ),
        panel(
            "Asynchronous jobs: pending and oldest age",
            [
                ("sum by (service) (sightline_jobs_pending)", "pending {{service}}"),
                (
                    "max by (service) (sightline_jobs_oldest_pending_age_seconds)",
                    "oldest age (s) {{service}}",
                ),
            ],
        ),
        panel(
            "Triton: inferences per second and average batch size",
            [
                (
                    "sum by (model, version) (rate(nv_inference_count[5m]))",
                    "inferences/s {{model}} v{{version}}",
                ),
                (
                    "sum by (model, version) (rate(nv_inference_count[5m])) / sum by (model, version) (rate(nv_inference_exec_count[5m]))",
                    "avg batch {{model}} v{{version}}",
                ),
            ],
            desc="Batch size = inferences / executions (dynamic batching).",
        ),
        panel(
            "Triton: queue and compute time per request",
            [
                (
                    "sum by (model) (rate(nv_inference_queue_duration_us[5m])) / sum by (model) (rate(nv_inference_request_success[5m])) / 1e6",
                    "queue {{model}}",
                ),
                (
                    "sum by (model) (rate(nv_inference_compute_infer_duration_us[5m])) / sum by (model) (rate(nv_inference_request_success[5m])) / 1e6",
                    "compute {{model}}",
                ),
                ("sum by (model) (nv_inference_pending_request_count)", "pending requests {{model}}"),
            ],
            unit="s",
        ),
        panel(
            "Explain: Grad-CAM batch size",
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(sightline_explain_batch_size_bucket[5m])))",
                    "p50",
                ),
                (
                    "sum(rate(sightline_explain_batch_size_sum[5m])) / sum(rate(sightline_explain_batch_size_count[5m]))",
                    "mean",
                ),
            ],
        ),
        panel(
            "Triton inference failures by reason",
            [("sum by (model, reason) (rate(nv_inference_request_failure[5m]))", "{{model}} {{reason}}")],
            unit="ops",
        ),
    ],
    [query_var("service", "label_values(sightline_http_request_duration_seconds_count, service)", "Service")],
)

MV = 'model=~"$model", version=~"$version"'
model = dashboard(
    "sightline-model",
    "Sightline / Model monitoring",
    [
        panel(
            "Input drift (PSI) by feature, all sites",
            [
                (
                    f'max by (feature) (sightline_drift_psi{{{MV}, segment="all", feature!="score"}})',
                    "{{feature}}",
                )
            ],
            desc="PSI against the training reference over the sliding window. > 0.2: significant shift (alert).",
        ),
        panel(
            "Input drift (PSI) by site/device",
            [
                (
                    f'max by (segment) (sightline_drift_psi{{{MV}, segment!="all", feature!="score"}})',
                    "{{segment}}",
                )
            ],
        ),
        panel(
            "Score drift (PSI) and KS statistic",
            [
                (f'max by (segment) (sightline_drift_psi{{{MV}, feature="score"}})', "PSI {{segment}}"),
                (
                    f'max by (segment) (sightline_drift_ks_statistic{{{MV}, feature="score"}})',
                    "KS {{segment}}",
                ),
            ],
        ),
        panel(
            "Drift window fill",
            [(f"sightline_drift_window_observations{{{MV}}}", "{{model}} v{{version}} {{segment}}")],
        ),
        panel(
            "Score distribution",
            [(f"sum by (le) (increase(sightline_model_score_bucket{{{MV}}}[$__rate_interval]))", "{{le}}")],
            kind="heatmap",
            unit="percentunit",
            desc="Calibrated probability of the positive label per study.",
        ),
        panel(
            "Share of positive decisions vs validation reference",
            [
                ("sightline:model_positive_share:ratio_rate6h", "observed {{model}} v{{version}}"),
                (f"sightline_model_reference_positive_rate{{{MV}}}", "reference {{model}} v{{version}}"),
            ],
            unit="percentunit",
        ),
        panel(
            "Decisions per second",
            [
                (
                    f"sum by (model, version, decision) (rate(sightline_model_decisions_total{{{MV}}}[5m]))",
                    "{{model}} v{{version}} {{decision}}",
                )
            ],
            unit="ops",
        ),
        panel(
            "Median score per version",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, model, version) (rate(sightline_model_score_bucket{{{MV}}}[1h])))",
                    "{{model}} v{{version}}",
                )
            ],
        ),
        panel(
            "Reviewer agreement with the model, per version (1 day)",
            [
                (
                    f'sum by (model, version) (rate(sightline_review_verdicts_total{{{MV}, verdict="agree"}}[1d])) / sum by (model, version) (rate(sightline_review_verdicts_total{{{MV}}}[1d]))',
                    "agree {{model}} v{{version}}",
                ),
                (f"sightline:review_disagreement:ratio_rate1d{{{MV}}}", "disagree {{model}} v{{version}}"),
            ],
            unit="percentunit",
            desc="Share of clinicians' verdicts on the model's results (the rest: uncertain). Disagreement above 30% "
            "with at least 20 verdicts a day fires SightlineReviewerDisagreementHigh.",
        ),
    ],
    [
        query_var("model", "label_values(sightline_model_decisions_total, model)", "Model"),
        query_var(
            "version", 'label_values(sightline_model_decisions_total{model=~"$model"}, version)', "Version"
        ),
    ],
)

# Post-market monitoring: the gateway's real-world gauges (sightline_gateway.core.monitoring) are recomputed from the
# database by every replica, so each reports the same value: max by, never sum by.
MVT = 'model=~"$model", version=~"$version", tenant=~"$tenant"'
BY = "max by (model, version, tenant)"
WHO = "{{tenant}} {{model}} v{{version}}"


def estimate(metric: str, bound: str) -> str:
    return f'{BY} (sightline_realworld_estimate{{{MVT}, metric="{metric}", bound="{bound}"}})'


def cases(kind: str) -> str:
    return f'{BY} (sightline_realworld_cases{{{MVT}, kind="{kind}"}})'


def claimed(metric: str) -> str:
    # The claim has no tenant label: never filter it by $tenant (one tenant selected would hide it).
    return f'max by (model, version) (sightline_model_claimed{{{MV}, metric="{metric}"}})'


def claimed_per_tenant(metric: str) -> str:
    """The claim repeated on each tenant's series, so a table row holds estimate and claim side by side."""
    return f"{cases('results')} * 0 + on (model, version) group_left {claimed(metric)}"


def versus_claim(metric: str) -> dict[str, Any]:
    return panel(
        f"Real-world {metric} (Wilson 95% interval) vs the model card's claim",
        [
            (estimate(metric, "point"), WHO),
            (estimate(metric, "lower"), WHO + " lower 95%"),
            (estimate(metric, "upper"), WHO + " upper 95%"),
            (claimed(metric), "claim {{model}} v{{version}}"),
        ],
        unit="percentunit",
        defaults={"min": 0, "max": 1},
        overrides=BOUNDS,
        desc=f"Over confirmed outcomes (histopathology) in the gateway's rolling window "
        f"(SIGHTLINE_GATEWAY_OUTCOME_WINDOW_DAYS), per model version and tenant; dashed: the 95% bounds; thick red: "
        f"the model card's test-set {metric}. Cases without an outcome count in neither: see the verification share.",
    )


outcomes = dashboard(
    "sightline-outcomes",
    "Sightline / Real-world performance",
    [
        panel(
            "Now: real-world performance vs claim, per model version and tenant",
            [
                (estimate("sensitivity", "point"), "Sensitivity"),
                (estimate("sensitivity", "lower"), "Sens. lower 95%"),
                (estimate("sensitivity", "upper"), "Sens. upper 95%"),
                (claimed_per_tenant("sensitivity"), "Sens. claimed"),
                (estimate("specificity", "point"), "Specificity"),
                (estimate("specificity", "lower"), "Spec. lower 95%"),
                (estimate("specificity", "upper"), "Spec. upper 95%"),
                (claimed_per_tenant("specificity"), "Spec. claimed"),
                (estimate("ppv", "point"), "PPV"),
                (estimate("npv", "point"), "NPV"),
                (cases("confirmed_positive"), "Confirmed malignant"),
                (cases("confirmed_negative"), "Confirmed benign"),
                (f"{cases('with_outcome')} / {cases('results')}", "With outcome"),
                (cases("backlog"), "Backlog"),
            ],
            kind="table",
            unit="percentunit",
            w=24,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": "Confirmed .*|Backlog"},
                    "properties": [{"id": "unit", "value": "short"}, {"id": "decimals", "value": 0}],
                }
            ],
            desc="Latest values. SightlineSensitivityBelowClaim fires when the whole sensitivity interval lies below "
            "the claim (upper bound < claim) with at least 20 confirmed malignant lesions, for 6 h. Site and subgroup "
            "(sex, age band) breakdowns: `sightline monitor report`.",
        ),
        versus_claim("sensitivity"),
        versus_claim("specificity"),
        panel(
            "Sensitivity: upper 95% bound minus the claim (alert below 0)",
            [
                (
                    f"{estimate('sensitivity', 'upper')} - on (model, version) group_left {claimed('sensitivity')}",
                    WHO,
                ),
                (cases("confirmed_positive"), WHO + " confirmed malignant"),
            ],
            unit="percentunit",
            defaults=threshold(0),
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* confirmed malignant"},
                    "properties": [
                        {"id": "unit", "value": "short"},
                        {"id": "custom.axisPlacement", "value": "right"},
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
                    ],
                }
            ],
            desc="What SightlineSensitivityBelowClaim evaluates: below 0 for 6 h over at least 20 confirmed malignant "
            "lesions (right axis) fires it.",
        ),
        panel(
            "Calibration gap (largest |observed - predicted| over score bins)",
            [(f"{BY} (sightline_realworld_calibration_gap{{{MVT}}})", WHO)],
            unit="percentunit",
            defaults=threshold(0.15, "orange"),
            desc="Over score bins with at least 30 confirmed cases (no series: no bin has enough yet). "
            "SightlineCalibrationOff fires above 15 points with at least 100 cases with an outcome, for 6 h.",
        ),
        panel(
            "Cases behind the estimates",
            [
                (
                    f'{BY[:-1]}, kind) (sightline_realworld_cases{{{MVT}, kind=~"results|with_outcome|confirmed_positive|confirmed_negative"}})',
                    WHO + " {{kind}}",
                ),
                (f"{cases('results')} - {cases('with_outcome')}", WHO + " without_outcome"),
            ],
            desc="Results in the window, those with a confirmed outcome (malignant / benign) and those without.",
        ),
        panel(
            "Share of results with a confirmed outcome (verification)",
            [(f"{cases('with_outcome')} / {cases('results')}", WHO)],
            unit="percentunit",
            defaults={"min": 0, "max": 1},
            desc="Verification bias: lesions judged benign are biopsied less often, so the estimates rest on a "
            "skewed subset when this share is low (specificity most of all).",
        ),
        panel(
            "Outcome backlog: referred results due an outcome without one",
            [(cases("backlog"), WHO + " backlog"), (cases("referred_due"), WHO + " referred, due")],
            desc="Referred results older than the expected-outcome delay (SIGHTLINE_GATEWAY_OUTCOME_EXPECTED_DAYS), "
            "and of those, the ones still without a confirmed outcome.",
        ),
        panel(
            "Outcome backlog share (alert above 50%)",
            [(f"{cases('backlog')} / ({cases('referred_due')} > 0)", WHO)],
            unit="percentunit",
            defaults={"min": 0, "max": 1} | threshold(0.5, "orange"),
            desc="SightlineOutcomeBacklog fires above 50% with at least 20 referred results due, for 1 day: check that "
            "the hospital's outcome reporter is posting to /v1/studies/{id}/outcome.",
        ),
        panel(
            "Confirmed outcomes recorded per day",
            [
                (
                    f"sum by (model, version, label) (increase(sightline_outcomes_total{{{MV}}}[1d]))",
                    "{{model}} v{{version}} {{label}}",
                )
            ],
            desc="All tenants (a correction counts again). Flat at zero: the pathology interface has stopped.",
        ),
        panel(
            "Reviewer agreement with the model (1 day), the proxy where no outcome is confirmed",
            [
                (
                    f'sum by (model, version) (rate(sightline_review_verdicts_total{{{MV}, verdict="agree"}}[1d])) / sum by (model, version) (rate(sightline_review_verdicts_total{{{MV}}}[1d]))',
                    "agree {{model}} v{{version}}",
                ),
                (f"sightline:review_disagreement:ratio_rate1d{{{MV}}}", "disagree {{model}} v{{version}}"),
            ],
            unit="percentunit",
            desc="Clinicians' verdicts on the model's results, all tenants (the rest: uncertain). Disagreement above "
            "30% with at least 20 verdicts a day fires SightlineReviewerDisagreementHigh.",
        ),
    ],
    [
        query_var("model", "label_values(sightline_realworld_cases, model)", "Model"),
        query_var("version", 'label_values(sightline_realworld_cases{model=~"$model"}, version)', "Version"),
        query_var(
            "tenant",
            'label_values(sightline_realworld_cases{model=~"$model", version=~"$version"}, tenant)',
            "Tenant",
        ),
    ],
    since="now-7d",
)

if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(exist_ok=True)
    for board in (services, model, outcomes):
        (out / f"{board['uid']}.json").write_text(json.dumps(board, indent=2) + "\n")
