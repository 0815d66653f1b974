"""Shadow and canary metrics: what a candidate version would have said, never shown to anyone
but the platform team (Prometheus, and the promotion gate's disagreement figure).

Labels are the model, both versions and the tenant: no study id, no score of a single study.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

_LABELS = ["model", "serving_version", "candidate_version", "tenant"]

SHADOW_SCORED = Counter(
    "sightline_shadow_scored_total",
    "Studies a candidate version scored silently beside the serving version",
    _LABELS,
)
SHADOW_DISAGREEMENT = Counter(
    "sightline_shadow_disagreement_total",
    "Shadowed studies where the candidate's decision (refer or not) differed from the serving version's",
    _LABELS,
)
SHADOW_POSITIVE = Counter(
    "sightline_shadow_positive_total",
    "Shadowed studies the candidate would have referred (its positive rate with sightline_shadow_scored)",
    _LABELS,
)
SHADOW_SCORE_DIFFERENCE = Histogram(
    "sightline_shadow_score_abs_difference",
    "Absolute difference of the candidate's and the serving version's probability per shadowed study",
    ["model", "serving_version", "candidate_version"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
)
SHADOW_FAILED = Counter(
    "sightline_shadow_failures_total",
    "Shadow inferences that failed (the study's result is unaffected)",
    ["model", "candidate_version"],
)
VERSION_ASSIGNED = Counter(
    "sightline_version_assignments_total",
    "Studies by the version whose result they got: serving or canary (the candidate's)",
    ["model", "version", "arm", "tenant"],
)


@dataclass(frozen=True)
class ShadowComparison:
    """A candidate's silent score of one study beside the serving version's."""

    model: str
    tenant: str
    serving_version: int
    candidate_version: int
    serving_probability: float
    candidate_probability: float
    serving_threshold: float
    candidate_threshold: float  # each version's own operating point (its manifest's)

    @property
    def candidate_refers(self) -> bool:
        return self.candidate_probability >= self.candidate_threshold

    @property
    def disagree(self) -> bool:
        return (self.serving_probability >= self.serving_threshold) != self.candidate_refers


def observe_shadow(c: ShadowComparison) -> None:
    """Count one shadowed study."""
    labels = (c.model, str(c.serving_version), str(c.candidate_version), c.tenant)
    SHADOW_SCORED.labels(*labels).inc()
    if c.candidate_refers:
        SHADOW_POSITIVE.labels(*labels).inc()
    if c.disagree:
        SHADOW_DISAGREEMENT.labels(*labels).inc()
    SHADOW_SCORE_DIFFERENCE.labels(*labels[:3]).observe(abs(c.candidate_probability - c.serving_probability))
