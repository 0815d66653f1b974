# ruff: noqa: E501 - PromQL expressions read best unbroken
"""Write the Grafana dashboards (dashboards/*.json) from one compact description.

The services and model dashboards are here, the real-world performance one in outcomes.py, the
builders they share in panels.py. Run ``python infra/grafana/generate.py`` after editing (or pass an output folder); tests check that every metric in the
JSON is one the services export. Grafana provisioning loads dashboards/ as-is.
"""

from __future__ import annotations

import json
from pathlib import Path

from outcomes import outcomes
from panels import MV, dashboard, panel, query_var

OUT = Path(__file__).resolve().parent / "dashboards"


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
            "Shadow: candidate's disagreement with the serving version (1 h)",
            [
                (
                    'sum by (model, serving_version, candidate_version, tenant) (rate(sightline_shadow_disagreement_total{model=~"$model"}[1h])) / sum by (model, serving_version, candidate_version, tenant) (rate(sightline_shadow_scored_total{model=~"$model"}[1h]))',
                    "{{model}} v{{candidate_version}} vs v{{serving_version}} {{tenant}}",
                ),
            ],
            unit="percentunit",
            desc="Share of shadowed studies whose decision (refer or not) the candidate would have changed. "
            "Never shown to clinicians; `sightline model promote` refuses above the bound (5% by default).",
        ),
        panel(
            "Shadow: positive rate, candidate vs serving (6 h)",
            [
                (
                    'sum by (model, candidate_version) (rate(sightline_shadow_positive_total{model=~"$model"}[6h])) / sum by (model, candidate_version) (rate(sightline_shadow_scored_total{model=~"$model"}[6h]))',
                    "candidate {{model}} v{{candidate_version}}",
                ),
                ("sightline:model_positive_share:ratio_rate6h", "serving {{model}} v{{version}}"),
            ],
            unit="percentunit",
        ),
        panel(
            "Shadow: |candidate - serving| probability, p50 / p95",
            [
                (
                    f'histogram_quantile({q}, sum by (le, model, candidate_version) (rate(sightline_shadow_score_abs_difference_bucket{{model=~"$model"}}[1h])))',
                    f"p{int(q * 100)} {{{{model}}}} v{{{{candidate_version}}}}",
                )
                for q in (0.5, 0.95)
            ],
        ),
        panel(
            "Studies by version and arm (serving, canary)",
            [
                (
                    'sum by (model, version, arm) (rate(sightline_version_assignments_total{model=~"$model"}[5m]))',
                    "{{model}} v{{version}} {{arm}}",
                )
            ],
            unit="ops",
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

if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(exist_ok=True)
    for board in (services, model, outcomes):
        (out / f"{board['uid']}.json").write_text(json.dumps(board, indent=2) + "\n")
