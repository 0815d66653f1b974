"""Promotion gates: may a candidate version of a model replace the serving one?

Pure functions over two evaluation reports (``sightline evaluate``'s ``evaluation.json``, one
per version) and the candidate's shadow disagreement on recent traffic. Each gate passes or
fails with a reason a platform team can act on; a promotion goes ahead only when every gate
passes. The same gates judge a rollback's target, except the shadow gate (the version rolled
back to served the traffic before; nothing shadowed it).

- ``auroc``: the candidate's test AUROC is not below the serving version's 95% CI lower bound.
- ``subgroup-gaps``: every gap between subgroups (sex, age band, site) is within its target
  (the report's tolerance), or, where the serving version is already beyond it, not wider
  than the serving version's gap (a candidate may not make a known gap worse).
- ``ece``: the candidate's expected calibration error is at most the target.
- ``out-of-scope``: the share of in-distribution test images the candidate flags out of scope
  is within a tolerance of what its threshold promises (1 - quantile, 1% by default).
- ``shadow-disagreement``: the candidate shadowed enough recent studies, and its decision
  differed from the serving version's on at most the bound's share of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sightline_common.errors import InvalidInput

AUROC = "auroc"
GAPS = "subgroup-gaps"
ECE = "ece"
OUT_OF_SCOPE = "out-of-scope"
SHADOW = "shadow-disagreement"
PLACEHOLDER = "not-placeholder"

#: The subgroup-gap metrics gated by default: AUPRC gaps follow each group's prevalence more
#: than the model, so they are reported by ``sightline evaluate`` but not gated.
GAP_METRICS = ("auroc", "sensitivity", "specificity", "ece")


@dataclass(frozen=True)
class GateTargets:
    """The bounds a candidate must meet (gateway settings ``lifecycle_gates``)."""

    ece_max: float = 0.05
    gap_metrics: tuple[str, ...] = GAP_METRICS
    #: How far the in-distribution out-of-scope share may be from what the threshold promises.
    out_of_scope_tolerance: float = 0.02
    #: The expected in-distribution flagged share when a report does not say (0.99 quantile).
    out_of_scope_expected: float = 0.01
    shadow_disagreement_max: float = 0.05
    shadow_min_studies: int = 100


@dataclass(frozen=True)
class ShadowFigure:
    """How often the candidate's decision differed from the serving version's, on shadowed studies."""

    studies: int
    disagreements: int

    @property
    def rate(self) -> float | None:
        return self.disagreements / self.studies if self.studies else None


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """Every gate's verdict; ``allowed`` only when all passed."""

    model: str
    from_version: int
    to_version: int
    gates: list[GateResult] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "allowed": self.allowed,
            "gates": [asdict(g) for g in self.gates],
        }


def report_sha256(raw: bytes) -> str:
    """The hash recorded for a report: of its bytes as stored, so anyone can check the file."""
    return hashlib.sha256(raw).hexdigest()


def parse_report(raw: bytes, *, model: str, version: int) -> dict[str, Any]:
    """An evaluation report, refused (invalid input) unless it is JSON for this model and version."""
    try:
        report = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the evaluation report of {model} version {version} is not JSON") from exc
    if not isinstance(report, dict):
        raise InvalidInput(f"the evaluation report of {model} version {version} is not an object")
    if report.get("model") not in (None, model) or report.get("version") != version:
        raise InvalidInput(
            f"the evaluation report found for {model} version {version} is of "
            f"{report.get('model')} version {report.get('version')}"
        )
    return report


def _value(metric: Any) -> float | None:
    if isinstance(metric, Mapping):
        metric = metric.get("value")
    return float(metric) if isinstance(metric, int | float) else None


def _ci_low(metric: Any) -> float | None:
    ci = metric.get("ci95") if isinstance(metric, Mapping) else None
    return float(ci[0]) if isinstance(ci, list) and ci and isinstance(ci[0], int | float) else None


def auroc_gate(serving: Mapping[str, Any], candidate: Mapping[str, Any]) -> GateResult:
    s_metric = serving.get("overall", {}).get("auroc")
    cand = _value(candidate.get("overall", {}).get("auroc"))
    low = _ci_low(s_metric)
    if cand is None or low is None:
        return GateResult(AUROC, False, "AUROC or the serving version's 95% CI is missing from a report")
    if cand < low:
        return GateResult(
            AUROC,
            False,
            f"candidate AUROC {cand:.4f} is below the serving version's 95% CI "
            f"({low:.4f}, point {_value(s_metric):.4f})",
        )
    return GateResult(AUROC, True, f"candidate AUROC {cand:.4f} >= serving CI lower bound {low:.4f}")


def gaps_gate(serving: Mapping[str, Any], candidate: Mapping[str, Any], targets: GateTargets) -> GateResult:
    c_gaps = candidate.get("gaps")
    if not isinstance(c_gaps, Mapping) or not c_gaps:
        return GateResult(GAPS, False, "the candidate's report has no subgroup gaps")
    s_raw = serving.get("gaps")
    s_gaps: Mapping[str, Any] = s_raw if isinstance(s_raw, Mapping) else {}
    problems: list[str] = []
    checked = 0
    for attribute, metrics in sorted(c_gaps.items()):
        for metric in targets.gap_metrics:
            entry = metrics.get(metric) if isinstance(metrics, Mapping) else None
            gap = entry.get("gap") if isinstance(entry, Mapping) else None
            if not isinstance(entry, Mapping) or not isinstance(gap, int | float):
                continue  # too few cases in the groups to measure it: reported, not gated
            checked += 1
            tolerance = float(entry.get("tolerance", 0.0))
            if gap <= tolerance:
                continue
            s_attr = s_gaps.get(attribute)
            before = s_attr.get(metric) if isinstance(s_attr, Mapping) else None
            s_gap = before.get("gap") if isinstance(before, Mapping) else None
            if isinstance(s_gap, int | float) and gap <= s_gap:
                continue  # already beyond the target while serving, and not wider
            was = f", serving {s_gap:.4f}" if isinstance(s_gap, int | float) else ""
            problems.append(f"{attribute} {metric} gap {gap:.4f} > target {tolerance:.4f}{was}")
    if not checked:
        return GateResult(GAPS, False, "no subgroup gap could be measured in the candidate's report")
    if problems:
        return GateResult(GAPS, False, "; ".join(problems))
    return GateResult(GAPS, True, f"{checked} subgroup gaps within target or not wider than serving")


def ece_gate(candidate: Mapping[str, Any], targets: GateTargets) -> GateResult:
    ece = _value(candidate.get("overall", {}).get("ece"))
    if ece is None:
        return GateResult(ECE, False, "the candidate's report has no ECE")
    if ece > targets.ece_max:
        return GateResult(ECE, False, f"candidate ECE {ece:.4f} > target {targets.ece_max:.4f}")
    return GateResult(ECE, True, f"candidate ECE {ece:.4f} <= target {targets.ece_max:.4f}")


def out_of_scope_share(report: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> float | None:
    """The in-distribution flagged share: the report's ``out_of_scope`` when ``sightline evaluate``
    wrote one, else the manifest's measured figure (``bench_out_of_scope``, then validation)."""
    oos = report.get("out_of_scope")
    if isinstance(oos, Mapping) and isinstance(oos.get("flagged"), int | float):
        return float(oos["flagged"])
    m_oos = (manifest or {}).get("out_of_scope")
    if not isinstance(m_oos, Mapping):
        return None
    measured = ((m_oos.get("evaluation") or {}).get("in_distribution") or {}).get("flagged")
    if isinstance(measured, int | float):
        return float(measured)
    share = (m_oos.get("validation") or {}).get("flagged_share")
    return float(share) if isinstance(share, int | float) else None


def out_of_scope_gate(
    serving_share: float | None, candidate_share: float | None, expected: float | None, targets: GateTargets
) -> GateResult:
    if candidate_share is None:
        if serving_share is None:
            return GateResult(OUT_OF_SCOPE, True, "neither version has an out-of-scope score")
        return GateResult(
            OUT_OF_SCOPE, False, "the serving version flags out-of-scope images and the candidate does not"
        )
    want = targets.out_of_scope_expected if expected is None else expected
    if abs(candidate_share - want) > targets.out_of_scope_tolerance:
        return GateResult(
            OUT_OF_SCOPE,
            False,
            f"candidate flags {candidate_share:.4f} of in-distribution images out of scope, "
            f"expected {want:.4f} +/- {targets.out_of_scope_tolerance:.4f}",
        )
    return GateResult(
        OUT_OF_SCOPE, True, f"in-distribution flagged share {candidate_share:.4f} (expected {want:.4f})"
    )


def expected_out_of_scope(manifest: Mapping[str, Any] | None) -> float | None:
    """``1 - quantile`` of the candidate's fitted out-of-scope threshold, when its manifest says."""
    q = (((manifest or {}).get("out_of_scope") or {}).get("fitted_on") or {}).get("quantile")
    return 1.0 - float(q) if isinstance(q, int | float) else None


def shadow_gate(figure: ShadowFigure | None, targets: GateTargets) -> GateResult:
    if figure is None or figure.studies < targets.shadow_min_studies:
        seen = 0 if figure is None else figure.studies
        return GateResult(
            SHADOW,
            False,
            f"the candidate shadowed {seen} recent studies, "
            f"fewer than the {targets.shadow_min_studies} needed",
        )
    rate = figure.rate or 0.0
    if rate > targets.shadow_disagreement_max:
        return GateResult(
            SHADOW,
            False,
            f"decisions differed on {figure.disagreements} of {figure.studies} shadowed studies "
            f"({rate:.4f} > bound {targets.shadow_disagreement_max:.4f})",
        )
    return GateResult(
        SHADOW,
        True,
        f"decisions differed on {figure.disagreements} of {figure.studies} shadowed studies ({rate:.4f})",
    )


def evaluate_gates(
    *,
    model: str,
    from_version: int,
    to_version: int,
    serving: Mapping[str, Any],
    candidate: Mapping[str, Any],
    shadow: ShadowFigure | None,
    targets: GateTargets,
    serving_manifest: Mapping[str, Any] | None = None,
    candidate_manifest: Mapping[str, Any] | None = None,
    check_shadow: bool = True,
) -> Decision:
    """Every gate's verdict on replacing ``from_version`` with ``to_version``."""
    gates: list[GateResult] = []
    if candidate.get("placeholder") or (candidate_manifest or {}).get("placeholder"):
        gates.append(GateResult(PLACEHOLDER, False, "the candidate is a placeholder (random weights)"))
    gates.append(auroc_gate(serving, candidate))
    gates.append(gaps_gate(serving, candidate, targets))
    gates.append(ece_gate(candidate, targets))
    gates.append(
        out_of_scope_gate(
            out_of_scope_share(serving, serving_manifest),
            out_of_scope_share(candidate, candidate_manifest),
            expected_out_of_scope(candidate_manifest),
            targets,
        )
    )
    if check_shadow:
        gates.append(shadow_gate(shadow, targets))
    return Decision(model=model, from_version=from_version, to_version=to_version, gates=gates)


def decision_record(
    decision: Decision, *, action: str, actor: str, serving_sha256: str, candidate_sha256: str
) -> dict[str, Any]:
    """What is stored of a decision, and whose hash the audit event carries."""
    return {
        "action": action,
        "actor": actor,
        **decision.as_dict(),
        "serving_report_sha256": serving_sha256,
        "candidate_report_sha256": candidate_sha256,
    }


def record_digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
