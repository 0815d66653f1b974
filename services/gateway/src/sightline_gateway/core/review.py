"""What the review workstation says about one result, beside the image: pure functions.

The calibration sentence, the model card's performance for the patient's own subgroup, and
whether the image looks unlike the training data, all computed from the model's manifest and
evaluation (the same files the model card is written from), never from patient data elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sightline_common.manifest import ModelManifest

#: Clinicians' verdicts on model results: the disagreement share per model version is an SRE signal.
REVIEW_VERDICTS = Counter(
    "sightline_review_verdicts",
    "Clinician verdicts on model results (agree, disagree, uncertain)",
    ["model", "version", "verdict"],
)

#: A subgroup with fewer test cases (or positives) than this has a wide interval: warn.
SMALL_SUBGROUP_N = 100
SMALL_SUBGROUP_POSITIVES = 50
AGE_BANDS: tuple[tuple[int, int, str], ...] = (
    (0, 29, "0-29"),
    (30, 44, "30-44"),
    (45, 59, "45-59"),
    (60, 74, "60-74"),
    (75, 200, "75+"),
)
SEXES = {"F": "F", "M": "M"}


def age_band(age_years: int | None) -> str:
    """The evaluation's age band of an age in years (``unknown`` when absent)."""
    if age_years is None:
        return "unknown"
    return next((name for lo, hi, name in AGE_BANDS if lo <= age_years <= hi), "unknown")


def parse_dicom_age(value: str | None) -> int | None:
    """Years from a DICOM AS value (``045Y``); months, weeks and days count as 0 years."""
    if not value or len(value) != 4 or not value[:3].isdigit():
        return None
    return int(value[:3]) if value[3] == "Y" else 0 if value[3] in "MWD" else None


def calibration_sentence(probability: float, manifest: ModelManifest | None) -> str:
    """A plain-language reading of the probability, from validation data.

    Uses the validation reliability table (``metrics.validation.reliability``: bin ``edges``,
    ``counts`` and ``positives``) when the manifest has one; otherwise the calibrated probability
    itself, with the validation calibration error that bounds how far to trust it.
    """
    positive = manifest.positive_label if manifest else "positive"
    validation: Mapping[str, Any] = (manifest.metrics.get("validation") or {}) if manifest else {}
    table = validation.get("reliability")
    if isinstance(table, Mapping):
        edges, counts, positives = table.get("edges"), table.get("counts"), table.get("positives")
        if isinstance(edges, list) and isinstance(counts, list) and isinstance(positives, list):
            for n, count in enumerate(counts):
                if edges[n] <= probability <= edges[n + 1] and count:
                    share = round(100 * positives[n] / count)
                    return (
                        f"Of 100 lesions scored like this in validation, about {share} were {positive} "
                        f"({positives[n]} of {count} scored {edges[n]:.2f}-{edges[n + 1]:.2f})."
                    )
    share = round(100 * probability)
    n_val = (manifest.training_data.get("n_val") if manifest else None) or "the"
    ece = validation.get("ece")
    bound = f"; calibration error {100 * float(ece):.1f} percentage points" if ece is not None else ""
    return (
        f"Of 100 lesions scored like this, about {share} would be {positive}: the probability is "
        f"calibrated on {n_val} validation lesions{bound}."
    )


@dataclass(frozen=True)
class SubgroupPerformance:
    """The test-set performance of the model for one attribute's group, with 95% intervals."""

    attribute: str
    group: str
    n: int
    positives: int
    metrics: dict[str, tuple[float | None, float | None, float | None]]  # name -> value, low, high
    small: bool


def _metric(value: Any) -> tuple[float | None, float | None, float | None]:
    if isinstance(value, Mapping):
        ci = value.get("ci95") or [None, None]
        return value.get("value"), ci[0], ci[1]
    return (float(value) if isinstance(value, int | float) else None), None, None


def subgroup_performance(
    evaluation: Mapping[str, Any] | None,
    manifest: ModelManifest | None,
    attribute: str,
    group: str,
    metrics: Sequence[str] = ("sensitivity", "specificity", "auroc"),
) -> SubgroupPerformance | None:
    """The group's row of the evaluation (with CIs), else of the manifest's subgroup table."""
    table: Any = (evaluation or {}).get("by_attribute") or {}
    if not table and manifest is not None:
        table = manifest.metrics.get("subgroups") or {}
    row = (table.get(attribute) or {}).get(group)
    if not isinstance(row, Mapping):
        return None
    n, positives = int(row.get("n") or 0), int(row.get("positives") or 0)
    return SubgroupPerformance(
        attribute=attribute,
        group=group,
        n=n,
        positives=positives,
        metrics={m: _metric(row.get(m)) for m in metrics},
        small=n < SMALL_SUBGROUP_N or positives < SMALL_SUBGROUP_POSITIVES,
    )


def unlike_training(image_stats: Mapping[str, Any] | None, manifest: ModelManifest | None) -> list[str]:
    """The image statistics outside the central 98% of the training images (empty: none)."""
    if not image_stats or manifest is None:
        return []
    reference = manifest.reference_distribution.get("image_stats") or {}
    outside = []
    for name, value in image_stats.items():
        quantiles = (reference.get(name) or {}).get("quantiles") if isinstance(reference, Mapping) else None
        if not isinstance(quantiles, Mapping) or not isinstance(value, int | float):
            continue
        low, high = quantiles.get("0.01"), quantiles.get("0.99")
        if low is not None and high is not None and not low <= value <= high:
            outside.append(name)
    return sorted(outside)


def agreement(verdicts: Sequence[str]) -> str | None:
    """``disagree`` when reviewers' verdicts differ, ``agree`` when two or more concur, else None."""
    if len(verdicts) < 2:
        return None
    return "agree" if len(set(verdicts)) == 1 else "disagree"
