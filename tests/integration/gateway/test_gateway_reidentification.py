"""Re-identification risk, measured (issue 21, finding 7): k-anonymity per tenant through the API.

Studies with planted quasi-identifiers (age, station, serial) go through the real deid app into a
gateway on SQLite and on PostgreSQL (127.0.0.1:5432, trust auth, database ``test``, a fresh
schema per test). Each study's deid summary carries its k, the threshold and whether it was
stored generalised; a class below k is stored generalised (age band, no station or serial); the
tenant's share below k moves as studies arrive, in the report (auditor role, audited) and in the
gauge; and no quasi-identifier value reaches a log line or a span.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from tests.conftest import skip_or_fail_in_ci
from tests.integration.gateway.conftest import PG_URL, drop_schema, pg_reachable
from tests.unit.gateway.gateway_fixtures import Harness, harness, phi_dicom, token

pytestmark = pytest.mark.integration
K = 3
STATION, SERIAL, MODEL = "ZQXQISTATION", "ZQXQISERIAL", "ZQXQIMODEL"


@pytest.fixture(params=["sqlite", "postgresql"])
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "sqlite":
        with harness(tmp_path, reidentification_k=K) as hh:
            yield hh
        return
    if not asyncio.run(pg_reachable()):
        skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
    schema = "gw_risk_" + secrets.token_hex(6)
    try:
        with harness(tmp_path, PG_URL, database_schema=schema, reidentification_k=K) as hh:
            yield hh
    finally:
        asyncio.run(drop_schema(PG_URL, schema))


def study(age: str, seed: int) -> bytes:
    """One patient's study (one date shift) with an age and a device that identifies its station."""
    ds = pydicom.dcmread(io.BytesIO(phi_dicom(seed=seed)))
    ds.PatientAge, ds.StationName, ds.DeviceSerialNumber = age, STATION, SERIAL
    ds.Manufacturer, ds.ManufacturerModelName, ds.BodyPartExamined = "ACME", MODEL, "SKIN"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def submit(h: Harness, tenant: str, data: bytes) -> dict[str, Any]:
    headers = {"Content-Type": "application/dicom", **token(tenant=tenant)}
    r = h.client.post("/v1/studies", content=data, headers=headers)
    assert r.status_code == 202, r.text
    got = h.client.get(f"/v1/studies/{r.json()['id']}", headers=token(tenant=tenant))
    assert got.status_code == 200, got.text
    return got.json()  # type: ignore[no-any-return]


def stored(h: Harness, study_id: str) -> pydicom.Dataset:
    (key,) = [k for k, _ in h.store.list(f"studies/{study_id}/") if k.endswith(".dcm")]
    return pydicom.dcmread(io.BytesIO(h.store.get(key)))


def report(h: Harness, tenant: str, roles: tuple[str, ...] = ("auditor",)) -> Any:
    return h.client.get("/v1/privacy/reidentification-risk", headers=token(tenant=tenant, roles=roles))


def test_k_and_share_below_k_move_as_studies_arrive_and_small_classes_are_generalised(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="sightline_gateway")
    tenant = "hospital-risk-" + secrets.token_hex(3)

    # Three studies of one class (age 42, one station): the first two are below k and stored
    # generalised; the third completes the class and is stored exactly.
    first, second, third = (submit(h, tenant, study("042Y", n)) for n in range(3))
    figures = [s["deid"]["reidentification"] for s in (first, second, third)]
    assert [f["generalised"] for f in figures] == [True, True, False]
    assert [f["k"] for f in figures] == [1, 2, 3]
    assert all(f["k_threshold"] == K for f in figures)
    assert [f["below_k"] for f in figures] == [True, True, False]
    generalised, exact = stored(h, first["id"]), stored(h, third["id"])
    assert generalised.PatientAge == "040Y" and generalised.ManufacturerModelName == MODEL
    assert STATION not in str(generalised.get("StationName", "")) and SERIAL not in str(
        generalised.get("DeviceSerialNumber", "")
    )
    assert exact.PatientAge == "042Y" and exact.StationName == STATION

    r = report(h, tenant)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["studies"], body["generalised"], body["below_k"], body["share_below_k"]) == (3, 2, 0, 0.0)
    assert body["distribution"] == [{"k": 3, "studies": 3}]
    gauge = REGISTRY.get_sample_value("sightline_reidentification_share_below_k", {"tenant": tenant})
    assert gauge == 0.0

    # A rare combination (age 93): alone in its class, generalised to 90+, and now at risk.
    rare = submit(h, tenant, study("093Y", 9))
    assert rare["deid"]["reidentification"] == {
        "k": 1,
        "k_threshold": K,
        "generalised": True,
        "below_k": True,
    }
    assert stored(h, rare["id"]).PatientAge == "090Y"
    body = report(h, tenant).json()
    assert (body["studies"], body["below_k"], body["share_below_k"]) == (4, 1, 0.25)
    assert body["distribution"] == [{"k": 1, "studies": 1}, {"k": 3, "studies": 3}]
    gauge = REGISTRY.get_sample_value("sightline_reidentification_share_below_k", {"tenant": tenant})
    assert gauge == 0.25

    # Another tenant's classes are its own (deid keys them per tenant).
    other = "hospital-other-" + secrets.token_hex(3)
    assert submit(h, other, study("042Y", 0))["deid"]["reidentification"]["k"] == 1

    # No quasi-identifier value in any log line or span (the class keys are hashes).
    assert spans.get_finished_spans(), "the requests were traced"
    logged = caplog.text + "".join(str(s.to_json()) for s in spans.get_finished_spans())
    for value in (STATION, SERIAL, MODEL, "042Y", "093Y", "040Y", "090Y"):
        assert value not in logged


def test_the_report_needs_the_auditor_role_and_is_audited(h: Harness) -> None:
    tenant = "hospital-audit-" + secrets.token_hex(3)
    submit(h, tenant, study("042Y", 0))
    assert report(h, tenant, roles=("submitter", "clinician")).status_code == 403
    assert report(h, tenant, roles=("auditor",)).status_code == 200
    assert report(h, tenant, roles=("admin",)).status_code == 200
    events = h.client.get(
        "/v1/audit",
        params={"action": "privacy.risk-report"},
        headers=token(tenant=tenant, roles=("auditor",)),
    ).json()["events"]
    assert len(events) == 2 and all(e["resource_id"] == tenant for e in events)


def test_studies_whose_images_retention_purged_no_longer_count(h: Harness) -> None:
    tenant = "hospital-purge-" + secrets.token_hex(3)
    ids = [submit(h, tenant, study("042Y", n))["id"] for n in range(2)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        statuses = {
            h.client.get(f"/v1/studies/{i}", headers=token(tenant=tenant)).json()["status"] for i in ids
        }
        if statuses <= {"completed", "failed"}:
            break
        time.sleep(0.05)
    assert report(h, tenant).json()["studies"] == 2
    pipeline = h.client.app.state.gateway.pipeline  # type: ignore[attr-defined]
    assert h.client.portal.call(pipeline.purge_expired, timedelta(0)) >= 2  # type: ignore[union-attr]
    body = report(h, tenant).json()
    assert (body["studies"], body["below_k"], body["distribution"]) == (0, 0, [])
    # A new study of the same class starts it again: the purged ones are not in what is held.
    assert submit(h, tenant, study("042Y", 5))["deid"]["reidentification"]["k"] == 1
