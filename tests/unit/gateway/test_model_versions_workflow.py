"""Versions in a study's path: a shadow candidate scores silently (its score is stored and
counted, never in the result, FHIR or DICOM SR); a canary study's result comes from the
candidate and names it; without a policy preprocess is asked as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import REGISTRY
from sightline_gateway.db.models import ShadowScore

from .gateway_fixtures import Harness, harness, phi_dicom, token
from .test_model_promotion_api import _repository, _rows

SERVING_LOGIT, CANDIDATE_LOGIT = 2.0, -4.0  # refer vs not: the two versions disagree


def _probability(logit: float) -> float:
    return round(float(1 / (1 + np.exp(-logit))), 6)


def _versions(**policy: Any) -> dict[str, Any]:
    return {"model_versions": {"*": {"derm-cnn": {"candidate": 2, **policy}}}}


def _run(h: Harness) -> dict[str, Any]:
    h.preprocess.logit = SERVING_LOGIT
    h.preprocess.version_logits = {("derm-cnn", 2): CANDIDATE_LOGIT}
    r = h.submit(phi_dicom(), mode="sync")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _every_form(h: Harness, study_id: str) -> str:
    """What a hospital or a clinician can read of the study: JSON, FHIR, SR, the study itself."""
    parts = []
    for path in ("/result", "/result.fhir", "/result.dcm", ""):
        r = h.client.get(f"/v1/studies/{study_id}{path}", headers=token())
        assert r.status_code == 200, (path, r.text)
        parts.append(r.text if path != "/result.dcm" else r.content.decode("latin-1"))
    return "\n".join(parts)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_shadow_candidate_is_stored_and_counted_but_never_in_what_anyone_reads(tmp_path: Path) -> None:
    labels = {"model": "derm-cnn", "serving_version": "1", "candidate_version": "2", "tenant": "hospital-a"}
    before = _metric("sightline_shadow_disagreement_total", **labels)
    with harness(tmp_path, model_repository=_repository(tmp_path), **_versions(shadow=True)) as h:
        body = _run(h)
        assert h.preprocess.versions == [1, 2]  # serving, then the shadow
        assert body["model"]["version"] == 1
        assert body["probability"] == _probability(SERVING_LOGIT) and body["refer"] is True
        everything = _every_form(h, body["study_id"])
        candidate = _probability(CANDIDATE_LOGIT)
        assert str(candidate) not in everything and str(round(candidate, 4)) not in everything
        assert "shadow" not in everything.lower() and "candidate" not in everything.lower()
        (row,) = _rows(h, ShadowScore)
        assert (row.serving_version, row.candidate_version, row.disagree) == (1, 2, True)
        assert row.study_id == body["study_id"] and row.tenant_id == "hospital-a"
        assert abs(row.candidate_probability - candidate) < 1e-6
        assert row.serving_threshold == row.candidate_threshold == 0.152975  # derm-cnn's, both versions
    assert _metric("sightline_shadow_disagreement_total", **labels) == before + 1


def test_the_candidate_decides_at_its_own_threshold(tmp_path: Path) -> None:
    """Version 2's manifest sets its operating point low enough to refer this study too: no disagreement."""
    repo = _repository(tmp_path)
    own = repo / "derm-cnn" / "2" / "manifest.json"
    own.write_text(json.dumps({**json.loads(own.read_text()), "threshold": 0.01}))
    with harness(tmp_path, model_repository=repo, **_versions(shadow=True)) as h:
        _run(h)
        (row,) = _rows(h, ShadowScore)
        assert (row.serving_threshold, row.candidate_threshold, row.disagree) == (0.152975, 0.01, False)


def test_a_canary_study_gets_the_candidates_result_which_names_its_version(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    own = repo / "derm-cnn" / "2" / "manifest.json"  # version 2's own threshold and digest
    manifest = json.loads(own.read_text())
    manifest.update(threshold=0.01, artifacts={"2/model.onnx": "ab" * 32})
    own.write_text(json.dumps(manifest))
    with harness(tmp_path, model_repository=repo, **_versions(canary_share=1.0)) as h:
        body = _run(h)
        assert h.preprocess.versions == [2]
        assert body["model"]["version"] == 2 and body["model"]["sha256"] == "ab" * 32
        assert body["threshold"] == 0.01
        assert body["probability"] == _probability(CANDIDATE_LOGIT) and body["refer"] is True
        assert [r.model_version for r in h.explain.requests] == [2]  # the heatmap of what scored
        assert _rows(h, ShadowScore) == []


def test_without_a_policy_preprocess_chooses_the_version_as_before(tmp_path: Path) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        body = _run(h)
        assert h.preprocess.versions == [None]
        assert body["model"]["version"] == 1 and _rows(h, ShadowScore) == []


def test_a_promoted_version_serves_every_study(tmp_path: Path) -> None:
    from .test_model_promotion_api import _shadow, admin

    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        _shadow(h, 200, 0)
        r = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 2}, headers=admin())
        assert r.status_code == 200, r.text
        body = _run(h)
        assert h.preprocess.versions == [2] and body["model"]["version"] == 2


def test_a_failing_shadow_never_fails_the_study(tmp_path: Path) -> None:
    from sightline_common.errors import UnprocessableInput

    with harness(tmp_path, model_repository=_repository(tmp_path), **_versions(shadow=True)) as h:
        real = h.preprocess.infer

        async def flaky(dicom: bytes, model: str, version: int | None = None) -> Any:
            if version == 2:
                raise UnprocessableInput("candidate refused")
            return await real(dicom, model, version)

        h.preprocess.infer = flaky  # type: ignore[method-assign]
        body = _run(h)
        assert body["model"]["version"] == 1 and _rows(h, ShadowScore) == []
        assert json.dumps(body).count("candidate") == 0
