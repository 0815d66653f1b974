"""Promotion gates on derm-cnn's real evaluation report: an equal candidate passes every gate,
and a deliberately worse one is refused by the gate it breaks, with a reason."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sightline_common.errors import InvalidInput
from sightline_gateway.core import promotion as p

REPO = Path(__file__).resolve().parents[3] / "model_repository" / "derm-cnn"
TARGETS = p.GateTargets()
AGREEING = p.ShadowFigure(studies=500, disagreements=5)


def _report() -> dict[str, Any]:
    return dict(json.loads((REPO / "evaluation" / "evaluation.json").read_text()))


def _manifest() -> dict[str, Any]:
    return dict(json.loads((REPO / "manifest.json").read_text()))


def _decide(candidate: dict[str, Any], shadow: p.ShadowFigure | None = AGREEING, **kw: Any) -> p.Decision:
    return p.evaluate_gates(
        model="derm-cnn",
        from_version=1,
        to_version=2,
        serving=_report(),
        candidate=candidate,
        shadow=shadow,
        targets=TARGETS,
        serving_manifest=_manifest(),
        candidate_manifest=kw.pop("candidate_manifest", _manifest()),
        **kw,
    )


def test_a_candidate_as_good_as_the_serving_version_passes_every_gate() -> None:
    decision = _decide(_report())
    assert decision.allowed, [g for g in decision.gates if not g.passed]
    assert {g.gate for g in decision.gates} == {p.AUROC, p.GAPS, p.ECE, p.OUT_OF_SCOPE, p.SHADOW}


def test_a_candidate_whose_auroc_falls_below_the_serving_ci_is_refused() -> None:
    worse = _report()
    worse["overall"]["auroc"]["value"] = worse["overall"]["auroc"]["ci95"][0] - 0.01
    decision = _decide(worse)
    assert not decision.allowed
    assert [g.gate for g in decision.failed] == [p.AUROC]
    assert "below the serving version's 95% CI" in decision.failed[0].reason


def test_a_candidate_within_the_serving_ci_passes_the_auroc_gate() -> None:
    slightly = _report()
    slightly["overall"]["auroc"]["value"] = slightly["overall"]["auroc"]["ci95"][0] + 0.001
    assert _decide(slightly).allowed


def test_a_candidate_that_widens_a_subgroup_gap_beyond_target_is_refused() -> None:
    worse = _report()
    worse["gaps"]["sex"]["sensitivity"]["gap"] = 0.2  # target 0.1, serving 0.0419
    decision = _decide(worse)
    assert [g.gate for g in decision.failed] == [p.GAPS]
    assert "sex sensitivity gap 0.2000 > target 0.1000" in decision.failed[0].reason


def test_a_gap_already_beyond_target_may_stay_but_not_widen() -> None:
    same = _report()
    assert same["gaps"]["sex"]["auroc"]["flagged"]  # 0.0551 > 0.05 while serving
    assert _decide(same).allowed
    wider = copy.deepcopy(same)
    wider["gaps"]["sex"]["auroc"]["gap"] = 0.07
    assert [g.gate for g in _decide(wider).failed] == [p.GAPS]


def test_a_badly_calibrated_candidate_is_refused() -> None:
    worse = _report()
    worse["overall"]["ece"]["value"] = 0.09
    decision = _decide(worse)
    assert [g.gate for g in decision.failed] == [p.ECE]
    assert "0.0900 > target 0.0500" in decision.failed[0].reason


def test_a_candidate_whose_out_of_scope_flag_fires_too_often_is_refused() -> None:
    worse = _report()
    worse["out_of_scope"] = {"threshold": 1.0, "n": 1373, "flagged": 0.08}
    decision = _decide(worse)
    assert [g.gate for g in decision.failed] == [p.OUT_OF_SCOPE]


def test_a_candidate_without_the_out_of_scope_score_the_serving_version_has_is_refused() -> None:
    manifest = _manifest()
    manifest.pop("out_of_scope")
    decision = _decide(_report(), candidate_manifest=manifest)
    assert [g.gate for g in decision.failed] == [p.OUT_OF_SCOPE]


def test_shadow_disagreement_beyond_the_bound_is_refused() -> None:
    decision = _decide(_report(), shadow=p.ShadowFigure(studies=500, disagreements=60))
    assert [g.gate for g in decision.failed] == [p.SHADOW]
    assert "60 of 500" in decision.failed[0].reason


def test_too_little_shadow_traffic_is_refused() -> None:
    for figure in (None, p.ShadowFigure(studies=20, disagreements=0)):
        decision = _decide(_report(), shadow=figure)
        assert [g.gate for g in decision.failed] == [p.SHADOW]


def test_a_rollback_judges_without_the_shadow_gate() -> None:
    decision = _decide(_report(), shadow=None, check_shadow=False)
    assert decision.allowed
    assert p.SHADOW not in {g.gate for g in decision.gates}


def test_a_placeholder_candidate_is_refused() -> None:
    worse = _report()
    worse["placeholder"] = True
    assert p.PLACEHOLDER in {g.gate for g in _decide(worse).failed}


def test_a_report_of_another_version_is_refused() -> None:
    raw = (REPO / "evaluation" / "evaluation.json").read_bytes()
    assert p.parse_report(raw, model="derm-cnn", version=1)["version"] == 1
    with pytest.raises(InvalidInput, match="is of derm-cnn version 1"):
        p.parse_report(raw, model="derm-cnn", version=2)
    with pytest.raises(InvalidInput, match="not JSON"):
        p.parse_report(b"{", model="derm-cnn", version=2)


def test_the_decision_record_names_both_reports_and_the_actor_and_its_digest_changes_with_them() -> None:
    decision = _decide(_report())
    record = p.decision_record(
        decision, action="promote", actor="ops", serving_sha256="a" * 64, candidate_sha256="b" * 64
    )
    assert record["actor"] == "ops" and record["allowed"] is True
    assert record["serving_report_sha256"] == "a" * 64 and record["candidate_report_sha256"] == "b" * 64
    other = dict(record, candidate_report_sha256="c" * 64)
    assert p.record_digest(record) != p.record_digest(other)
