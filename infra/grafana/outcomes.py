# ruff: noqa: E501 - PromQL expressions read best unbroken
"""The real-world performance dashboard (post-market monitoring, issue 20), written by generate.py."""

from __future__ import annotations

from typing import Any

from panels import BOUNDS, MV, dashboard, panel, query_var, threshold

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
