"""Confirmed outcomes through the API: roles, tenants, bad codes (4xx with reasons), supersession,
audit, FHIR intake, and no outcome code, date or text in logs or traces."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from tests.unit.gateway.gateway_fixtures import Harness, harness, token


def reporter() -> dict[str, str]:
    """Minted per use: a token made at import expires before a long run reaches the test."""
    return token(roles=("outcome-reporter",), subject="pathology-interface")

MELANOMA = {
    "code_system": "snomed",
    "code": "372244006",
    "method": "histopathology",
    "diagnosed_on": "2026-11-02",
}
NEVUS = {"code_system": "icdo3", "code": "8760/0", "method": "histopathology", "diagnosed_on": "2026-11-09"}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as hh:
        yield hh


def study(h: Harness) -> str:
    r = h.submit(mode="sync")
    assert r.status_code == 200, r.text
    return str(r.headers["Location"].rsplit("/", 1)[1])


def post(h: Harness, study_id: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return h.client.post(f"/v1/studies/{study_id}/outcome", json=body, headers=headers or reporter())


def test_outcome_is_linked_to_model_version_and_subgroup(h: Harness) -> None:
    sid = study(h)
    r = post(h, sid, {**MELANOMA, "site": "north-clinic"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["label"] == "malignant" and body["positive"] is True and body["current"] is True
    assert body["model_name"] == "derm-cnn" and body["model_version"] >= 1 and body["site"] == "north-clinic"
    assert body["reported_by"] == "pathology-interface" and body["supersedes"] is None


def test_a_later_outcome_supersedes_and_both_are_kept_and_audited(h: Harness) -> None:
    sid = study(h)
    first = post(h, sid, MELANOMA).json()
    second = post(h, sid, NEVUS).json()
    assert second["supersedes"] == first["id"] and second["label"] == "benign"
    history = h.client.get(f"/v1/studies/{sid}/outcomes", headers=token(roles=("auditor",))).json()
    assert [o["id"] for o in history] == [second["id"], first["id"]]
    assert [o["current"] for o in history] == [True, False]
    audit = h.client.get("/v1/audit", params={"resource_type": "outcome"}, headers=token(roles=("auditor",)))
    actions = [(e["action"], e["resource_id"]) for e in audit.json()["events"]]
    assert ("outcome.create", first["id"]) in actions and ("outcome.supersede", second["id"]) in actions


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"code": "999999999"}, 422, "code"),  # well-formed, not in the table
        ({"code": "melanoma"}, 422, "code"),  # not a code at all
        ({"code_system": "icd10"}, 422, "code_system"),
        ({"code": "8720/1"}, 422, "code"),  # ICD-O uncertain behaviour: not in the table
        ({"method": "guess"}, 422, "method"),
        ({"diagnosed_on": "2999-01-01"}, 422, "diagnosed_on"),
        ({"site": "<script>"}, 422, "site"),
        ({"free_text": "x"}, 422, "free_text"),
    ],
)
def test_bad_outcomes_are_refused_with_the_field_named(
    h: Harness, change: dict[str, str], status: int, field: str
) -> None:
    sid = study(h)
    r = post(h, sid, {**MELANOMA, **change})
    assert r.status_code == status, r.text
    assert field in r.text


@pytest.mark.parametrize("roles", [("submitter",), ("auditor",)])
def test_only_outcome_reporters_and_clinicians_report(h: Harness, roles: tuple[str, ...]) -> None:
    sid = study(h)
    assert post(h, sid, MELANOMA, token(roles=roles)).status_code == 403
    assert post(h, sid, MELANOMA, token(roles=("clinician",))).status_code == 201


def test_another_tenants_study_is_not_found(h: Harness) -> None:
    sid = study(h)
    other = token(tenant="hospital-b", roles=("outcome-reporter",))
    assert post(h, sid, MELANOMA, other).status_code == 404
    assert h.client.get(f"/v1/studies/{sid}/outcomes", headers=other).status_code == 404


def _observation(code: str = "372244006", status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": "22637-3"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "method": {"text": "histopathology"},
        "effectiveDateTime": "2026-11-02",
    }


def _report() -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "SP"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "60567-5"}]},
        "conclusionCode": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/icd-o-3", "code": "8720/0"}]}
        ],
        "effectiveDateTime": "2026-11-03T10:00:00Z",
    }


@pytest.mark.parametrize(("resource", "label"), [(_observation(), "malignant"), (_report(), "benign")])
def test_fhir_observation_and_diagnostic_report(h: Harness, resource: dict[str, Any], label: str) -> None:
    sid = study(h)
    r = h.client.post(
        f"/v1/studies/{sid}/outcome.fhir",
        json=resource,
        headers={**reporter(), "Content-Type": "application/fhir+json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["label"] == label and r.json()["source"] == "fhir"


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        (_observation(code="123"), "code"),
        (_observation(status="preliminary"), "status"),
        ({**_observation(), "status": 7}, "status"),  # invalid FHIR
        ({"resourceType": "Patient"}, "resourceType"),
    ],
)
def test_bad_fhir_is_refused_with_reasons(h: Harness, resource: dict[str, Any], field: str) -> None:
    sid = study(h)
    r = h.client.post(f"/v1/studies/{sid}/outcome.fhir", json=resource, headers=reporter())
    assert 400 <= r.status_code < 500 and field in r.text, r.text


def test_outcome_counter(h: Harness) -> None:
    def count() -> float:
        return (
            REGISTRY.get_sample_value(
                "sightline_outcomes_total", {"model": "derm-cnn", "version": "1", "label": "malignant"}
            )
            or 0.0
        )

    before = count()
    post(h, study(h), MELANOMA)
    assert count() == before + 1


def test_no_outcome_code_date_or_text_in_logs_or_traces(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    sid = study(h)
    # Our own loggers at DEBUG; third-party ones at INFO (aiosqlite's DEBUG echoes SQL parameters,
    # as any driver's statement log would: production logs at INFO).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="sightline_gateway")
    secret = {**MELANOMA, "code": "254701007", "diagnosed_on": "2026-10-17", "site": "zqxsite"}
    assert post(h, sid, secret).status_code == 201
    fhir = {**_observation(code="400096001"), "effectiveDateTime": "2026-10-18"}
    assert h.client.post(f"/v1/studies/{sid}/outcome.fhir", json=fhir, headers=reporter()).status_code == 201
    h.client.get(f"/v1/studies/{sid}/outcomes", headers=reporter())
    assert spans.get_finished_spans(), "the requests were traced"
    logged = caplog.text + "".join(str(s.to_json()) for s in spans.get_finished_spans())
    for value in (
        "254701007",
        "400096001",
        "2026-10-17",
        "2026-10-18",
        "zqxsite",
        "histopathology",
        "Melanocytic",
    ):
        assert value not in logged
