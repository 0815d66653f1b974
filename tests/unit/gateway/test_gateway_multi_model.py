"""A study two models accept goes to both: a result per model in JSON (``findings``), FHIR (an
Observation each) and the DICOM SR (a finding each); a study one model accepts reads as before."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from sightline_common.errors import DependencyUnavailable
from sightline_gateway.clients.services import Inference

from tests.unit.gateway.gateway_fixtures import Harness, harness, phi_dicom, token
from tests.unit.gateway.routing_fixtures import DERM, DERM_B, derm_copy, derm_manifest, repository

#: Each model's logit from the fake preprocess: the two probabilities differ, and so do the decisions.
LOGITS = {DERM: 2.0, DERM_B: -3.0}


def probability(model: str) -> float:
    return round(float(1 / (1 + np.exp(-LOGITS[model]))), 6)


@pytest.fixture
def both(tmp_path: Path) -> Iterator[Harness]:
    repo = repository(tmp_path, derm_manifest(), derm_copy())
    with harness(
        tmp_path,
        model_repository=repo,
        models=[DERM, DERM_B],
        job_backoff_max_s=0.05,
        environment="development",  # the review UI's dev login
    ) as h:
        h.preprocess.logits = dict(LOGITS)
        yield h


def result(h: Harness, study_id: str, form: str = "") -> Any:
    r = h.client.get(f"/v1/studies/{study_id}/result{form}", headers=token())
    assert r.status_code == 200, r.text
    return r


def test_a_study_two_models_accept_gets_a_finding_from_each_with_its_own_probability(both: Harness) -> None:
    r = both.submit(phi_dicom(), mode="sync")
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(set(both.preprocess.models)) == [DERM, DERM_B]
    findings = body["findings"]
    assert [f["model"]["name"] for f in findings] == [DERM, DERM_B]
    assert [f["probability"] for f in findings] == [probability(DERM), probability(DERM_B)]
    assert [f["refer"] for f in findings] == [True, False]
    for f in findings:
        assert f["threshold"] == derm_manifest().threshold
        assert f["model"]["sha256"] and f["model"]["version"] == 1
        assert f["model_card"] == f"/v1/models/{f['model']['name']}"
        assert f["explanation"]["status"] == "available" and "overlay_png" in f["explanation"]["links"]
    # Each model's heatmap is its own object.
    assert (
        findings[0]["explanation"]["links"]["overlay_png"]
        != findings[1]["explanation"]["links"]["overlay_png"]
    )
    assert sorted(req.model_name for req in both.explain.requests) == [DERM, DERM_B]
    # The top level is the first routed model's, as for a single-model study.
    assert (
        body["model"]["name"] == DERM and body["probability"] == probability(DERM) and body["refer"] is True
    )
    study = both.client.get(f"/v1/studies/{body['study_id']}", headers=token()).json()
    assert study["models"] == [DERM, DERM_B] and study["status"] == "completed"


def test_fhir_has_one_observation_per_model_each_with_its_probability(both: Harness) -> None:
    study_id = both.submit(phi_dicom(), mode="sync").json()["study_id"]
    bundle = result(both, study_id, ".fhir").json()
    resources = [e["resource"] for e in bundle["entry"]]
    observations = [x for x in resources if x["resourceType"] == "Observation"]
    assert [o["valueQuantity"]["value"] for o in observations] == [probability(DERM), probability(DERM_B)]
    assert [o["code"]["text"].split(":")[0] for o in observations] == [DERM, DERM_B]
    devices = {x["id"] for x in resources if x["resourceType"] == "Device"}
    assert {o["device"]["reference"].split("/")[1] for o in observations} == devices and len(devices) == 2
    (report,) = [x for x in resources if x["resourceType"] == "DiagnosticReport"]
    assert [ref["reference"] for ref in report["result"]] == [f"Observation/{o['id']}" for o in observations]
    assert DERM in report["conclusion"] and DERM_B in report["conclusion"]


def _sr_findings(data: bytes) -> list[tuple[str, float]]:
    """(algorithm name, probability) of each measurement group of a TID 1500 SR."""
    sr = dcmread(io.BytesIO(data))
    found = []

    def code(item: Any) -> str:
        names = item.get("ConceptNameCodeSequence") or []
        return str(names[0].get("CodeValue") or names[0].get("LongCodeValue") or "") if names else ""

    def walk(items: Any) -> None:
        for item in items:
            if code(item) == "sightline-probability":
                value = float(item.MeasuredValueSequence[0].NumericValue)
                algorithm = next(
                    str(c.TextValue)
                    for c in item.ContentSequence
                    if code(c) == "111001"  # Algorithm Name
                )
                found.append((algorithm, value))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return found


def test_the_sr_has_one_finding_per_model_each_with_its_probability(both: Harness) -> None:
    study_id = both.submit(phi_dicom(), mode="sync").json()["study_id"]
    data = result(both, study_id, ".dcm").content
    assert _sr_findings(data) == [(DERM, probability(DERM)), (DERM_B, probability(DERM_B))]


def test_a_single_model_study_reads_as_before_with_its_one_finding_listed(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        body = h.submit(phi_dicom(), mode="sync").json()
        bundle = result(h, body["study_id"], ".fhir").json()
        sr = result(h, body["study_id"], ".dcm").content
    before = {
        "study_id", "status", "model", "probability", "calibrated", "threshold", "decision", "refer",
        "instances", "explanation", "trace_id", "created_at", "finalised_at", "reviews", "statement",
        "warning", "out_of_scope", "out_of_scope_warning",
    }  # fmt: skip
    assert set(body) - before == {"findings"}
    (finding,) = body["findings"]
    for key in ("model", "probability", "threshold", "decision", "refer", "instances", "explanation"):
        assert finding[key] == body[key]
    assert finding["model_card"] == f"/v1/models/{DERM}"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["DiagnosticReport", "Observation", "Device", "ImagingStudy"]
    assert bundle["entry"][1]["resource"]["id"] == f"obs-{body['study_id']}"
    assert [name for name, _ in _sr_findings(sr)] == [DERM]


def test_a_review_finalises_every_models_result(both: Harness) -> None:
    study_id = both.submit(phi_dicom(), mode="sync").json()["study_id"]
    r = both.client.post(
        f"/v1/studies/{study_id}/reviews", json={"verdict": "agree"}, headers=token(roles=("clinician",))
    )
    assert r.status_code == 201, r.text
    body = result(both, study_id).json()
    assert body["status"] == "final" and [f["status"] for f in body["findings"]] == ["final", "final"]
    assert {e["resource"]["status"] for e in result(both, study_id, ".fhir").json()["entry"][:3]} == {"final"}


def test_an_outage_between_the_two_models_resumes_with_the_second_and_stores_each_result_once(
    both: Harness,
) -> None:
    inner = both.preprocess.infer
    failed: list[str] = []

    async def second_fails_once(dicom: bytes, model: str) -> Inference:
        if model == DERM_B and not failed:
            failed.append(model)
            raise DependencyUnavailable("preprocess unavailable (UNAVAILABLE)")
        return await inner(dicom, model)

    both.preprocess.infer = second_fails_once  # type: ignore[method-assign]
    r = both.submit(phi_dicom(), mode="sync")
    assert r.status_code == 200, r.text
    assert failed == [DERM_B]
    # The first model's inferences were checkpointed: it was not run again after the retry.
    assert both.preprocess.models == [DERM, DERM_B]
    assert [f["probability"] for f in r.json()["findings"]] == [probability(DERM), probability(DERM_B)]
    db = both.client.app.state.gateway.pipeline.queue.sessions  # type: ignore[attr-defined]
    assert _result_models(both, db, r.json()["study_id"]) == [DERM, DERM_B]


def _result_models(h: Harness, sessions: Any, study_id: str) -> list[str]:
    from sightline_gateway.db.models import Result
    from sqlalchemy import select

    async def models() -> list[str]:
        async with sessions() as s:
            rows = await s.scalars(select(Result.model_name).where(Result.study_id == study_id))
            return sorted(rows.all())

    return h.client.portal.call(models)  # type: ignore[union-attr, no-any-return]


def test_explanations_pending_for_both_models_are_each_filled_in_when_explain_is_back(both: Harness) -> None:
    both.explain.unavailable = True
    r = both.submit(phi_dicom(), mode="sync")
    assert r.status_code == 200, r.text
    assert [f["explanation"]["status"] for f in r.json()["findings"]] == ["pending", "pending"]
    both.explain.unavailable = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        findings = result(both, r.json()["study_id"]).json()["findings"]
        if all(f["explanation"]["status"] != "pending" for f in findings):
            break
        time.sleep(0.05)
    assert [f["explanation"]["status"] for f in findings] == ["available", "available"]
    assert (
        findings[0]["explanation"]["links"]["overlay_png"]
        != findings[1]["explanation"]["links"]["overlay_png"]
    )
    audit = both.client.get("/v1/audit", params={"limit": 1000}, headers=token(roles=("auditor",))).json()
    assert [e["action"] for e in audit["events"]].count("result.explanation.available") == 2


def test_drift_and_score_metrics_are_kept_per_model(both: Harness) -> None:
    both.submit(phi_dicom(), mode="sync")
    metrics = both.client.get("/metrics").text
    scored = {
        line.split('model="', 1)[1].split('"', 1)[0]
        for line in metrics.splitlines()
        if line.startswith("sightline_") and 'model="' in line and "score" in line.split("{", 1)[0]
    }
    assert {DERM, DERM_B} <= scored, json.dumps(sorted(scored))


def test_the_worklist_has_one_row_per_study_referred_when_any_model_refers(both: Harness) -> None:
    from sightline_gateway.db.worklist import WorklistQuery, worklist

    both.preprocess.logits = {DERM: -3.0, DERM_B: 2.0}  # only the second model refers
    both.submit(phi_dicom(), mode="sync")
    sessions = both.client.app.state.gateway.sessions  # type: ignore[attr-defined]

    async def listed(**q: Any) -> Any:
        return await worklist(sessions, "hospital-a", WorklistQuery(**q))

    everything = both.client.portal.call(listed)  # type: ignore[union-attr]
    assert everything.total == 1 and len(everything.rows) == 1
    (row,) = everything.rows
    assert row.refer is True and row.probability == pytest.approx(float(1 / (1 + np.exp(3.0))))
    assert both.client.portal.call(lambda: listed(referred=True)).total == 1  # type: ignore[union-attr]
    assert both.client.portal.call(lambda: listed(referred=False)).total == 0  # type: ignore[union-attr]


def test_the_review_page_lists_the_other_models_findings(both: Harness) -> None:
    from tests.unit.gateway.test_review_ui import login

    study_id = both.submit(phi_dicom(), mode="sync").json()["study_id"]
    login(both)
    page = both.client.get(f"/review/studies/{study_id}")
    assert page.status_code == 200, page.text
    assert 'id="other-findings"' in page.text and f"{DERM_B} v1" in page.text
    assert f"{probability(DERM_B):.3f}" in page.text


def test_a_job_queued_before_studies_had_several_models_resumes_where_it_was() -> None:
    from sightline_gateway.core.backfill import pending_requests
    from sightline_gateway.core.workflow import model_progress

    inferences = [{"key": "k", "probability": 0.7}]
    old = {"traceparent": {}, "inferences": inferences, "explanation": {"status": "pending"}}
    assert model_progress(old, DERM) == {
        DERM: {"inferences": inferences, "explanation": {"status": "pending"}}
    }
    assert model_progress({"traceparent": {}}, DERM) == {}
    request = {"model_name": DERM, "object_key": "k"}
    assert pending_requests({"explain_request": request}) == [request]
    assert pending_requests({"explain_requests": [request, request]}) == [request, request]


def test_an_outcome_counts_only_for_the_model_whose_labels_judged_it(both: Harness) -> None:
    # The outcome's positive is judged with the first model's labels: the second model's result
    # of the same study must not be scored against it (no outcome rather than a wrong one).
    import asyncio
    from datetime import timedelta

    from sightline_gateway.db.models import utcnow
    from sightline_gateway.db.outcomes import load_cases

    study_id = both.submit(phi_dicom(), mode="sync").json()["study_id"]
    body = {
        "code_system": "snomed",
        "code": "372244006",
        "method": "histopathology",
        "diagnosed_on": "2026-11-02",
    }
    reporter = token(roles=("outcome-reporter",), subject="pathology-interface")
    r = both.client.post(f"/v1/studies/{study_id}/outcome", json=body, headers=reporter)
    assert r.status_code == 201, r.text
    sessions = both.client.app.state.gateway.sessions  # type: ignore[attr-defined]
    now = utcnow()
    cases = asyncio.run(load_cases(sessions, now - timedelta(hours=1), now + timedelta(minutes=1)))
    truth = {c.model: c.truth for c in cases}
    assert truth == {DERM: True, DERM_B: None}
