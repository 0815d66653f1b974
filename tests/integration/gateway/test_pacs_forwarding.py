"""Issue 18, the way back: a study submitted to the gateway comes back to the hospital's PACS (Debian's
Orthanc, started here on loopback) as an SR and a heatmap Segmentation under the patient's ORIGINAL
StudyInstanceUID, PatientID and accession, by STOW-RS and by C-STORE, while the gateway keeps
nothing identified (database, object store, logs, spans); a PACS that is down is retried (also
across a gateway restart), then reported failed with nothing lost.
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydicom import dcmread
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage
from sightline_gateway.db.engine import make_engine
from sightline_gateway.settings import PacsDestination
from sqlalchemy import text

from tests.conftest import skip_or_fail_in_ci
from tests.integration.gateway.conftest import PG_URL, drop_schema, pg_reachable
from tests.integration.gateway.pacs import AE_TITLE, Orthanc, value
from tests.unit.gateway.forwarding_fixtures import forwarding_harness, stored_text, wait_delivery
from tests.unit.gateway.gateway_fixtures import PHI, Harness, phi_dicom, token

pytestmark = [pytest.mark.integration]

STUDY, SERIES, SOP_INSTANCE, SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
PATIENT_ID, ACCESSION, MODALITY = "00100020", "00080050", "00080060"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path / "orthanc")
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.shutdown()


def destination(orthanc: Orthanc, kind: str) -> PacsDestination:
    if kind == "stow-rs":
        return PacsDestination(name="orthanc", stow_url=orthanc.stow_url, timeout_s=10)
    return PacsDestination(
        name="orthanc", host="127.0.0.1", port=orthanc.dicom_port, called_ae_title=AE_TITLE, timeout_s=10
    )


def submit(h: Harness, data: bytes) -> str:
    r = h.submit(data, mode="sync")
    assert r.status_code in (200, 201), r.text
    return str(r.headers["Location"]).rsplit("/", 1)[1]


def identified_anywhere(tmp: Path, values: list[str]) -> list[str]:
    """The values found in the gateway's database or object store (planted-PHI scan)."""
    stored = stored_text(tmp)
    return [v for v in values if v.encode() in stored]


@pytest.mark.parametrize("kind", ["stow-rs", "c-store"])
def test_results_arrive_in_the_pacs_under_the_original_study_and_nothing_identified_stays(
    tmp_path: Path,
    orthanc: Orthanc,
    kind: str,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    orthanc.start()
    data = phi_dicom(seed=11)
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    with forwarding_harness(tmp_path, None, destination(orthanc, kind)) as h:
        study_id = submit(h, data)
        delivery = wait_delivery(h, study_id)["delivery"]
        assert delivery["status"] == "delivered", delivery
        assert (delivery["attempts"], delivery["destination"]) == (1, "orthanc")
    gateway_logs = caplog.text  # before this test's own requests to Orthanc name the study

    # Orthanc's QIDO-RS: the patient's own study, with Sightline's two AI series in it.
    (study,) = orthanc.qido("studies", StudyInstanceUID=str(sent.StudyInstanceUID))
    assert value(study, PATIENT_ID) == sent.PatientID and value(study, ACCESSION) == sent.AccessionNumber
    series = orthanc.qido(f"studies/{sent.StudyInstanceUID}/series")
    assert sorted(value(s, MODALITY) for s in series) == ["SEG", "SR"]
    assert sent.SeriesInstanceUID not in {value(s, SERIES) for s in series}  # new series of their own
    instances = orthanc.qido(f"studies/{sent.StudyInstanceUID}/instances")
    assert {value(i, SOP_CLASS) for i in instances} == {Comprehensive3DSRStorage, SegmentationStorage}
    # WADO-RS metadata: the SR's evidence and the Segmentation's source are the original image.
    metadata = orthanc.qido(f"studies/{sent.StudyInstanceUID}/metadata")
    text = str(metadata)
    assert str(sent.SOPInstanceUID) in text and str(sent.SeriesInstanceUID) in text
    for item in metadata:
        assert value(item, PATIENT_ID) == sent.PatientID

    # The gateway kept nothing identified: database, objects, logs, spans.
    originals = [str(sent.StudyInstanceUID), str(sent.SeriesInstanceUID), str(sent.SOPInstanceUID)]
    planted = [PHI, str(sent.PatientID), str(sent.AccessionNumber), *originals]
    assert identified_anywhere(tmp_path, planted) == []
    for v in planted:
        assert v not in gateway_logs
    attributes = str([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    assert any(s.name == "gateway.deliver" for s in spans.get_finished_spans())
    for v in planted:
        assert v not in attributes


def test_a_pacs_that_is_down_is_retried_across_a_gateway_restart_until_it_is_back(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    data = phi_dicom(seed=12)
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    with forwarding_harness(tmp_path, None, destination(orthanc, "stow-rs")) as h:
        study_id = submit(h, data)
        deadline = time.monotonic() + 20
        while (
            h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()["delivery"]["attempts"] < 2
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # The gateway stopped with the delivery pending; the PACS comes back, and so does the gateway.
    orthanc.start()
    with forwarding_harness(tmp_path, None, destination(orthanc, "stow-rs")) as h:
        delivery = wait_delivery(h, study_id)["delivery"]
    assert delivery["status"] == "delivered" and delivery["attempts"] >= 3
    (study,) = orthanc.qido("studies", StudyInstanceUID=str(sent.StudyInstanceUID))
    assert value(study, PATIENT_ID) == sent.PatientID


@pytest.mark.parametrize("kind", ["stow-rs", "c-store"])
def test_a_pacs_that_stays_down_is_reported_failed_nothing_is_lost_and_an_admin_sends_it_again(
    tmp_path: Path, orthanc: Orthanc, kind: str
) -> None:
    data = phi_dicom(seed=13)
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    with forwarding_harness(tmp_path, None, destination(orthanc, kind), delivery_retry_budget_s=1.5) as h:
        study_id = submit(h, data)
        body = wait_delivery(h, study_id)
        delivery = body["delivery"]
        assert delivery["status"] == "failed" and delivery["attempts"] >= 2
        assert "retry budget exhausted" in delivery["last_error"]
        # Nothing lost: the result, its SR and the sealed record are all still there.
        assert body["probability"] > 0
        assert h.client.get(f"/v1/studies/{study_id}/result.dcm", headers=token()).status_code == 200
        events = h.client.get(
            "/v1/audit", params={"action": "result.deliver"}, headers=token(roles=("auditor",))
        )
        assert [(e["resource_id"], e["outcome"]) for e in events.json()["events"]] == [(study_id, "failure")]
        con = sqlite3.connect(tmp_path / "gw.db")
        assert con.execute("SELECT count(*) FROM reidentification_records").fetchone() == (1,)
        # The PACS is back: an admin sends the result again, and it is filed under the patient's study.
        orthanc.start()
        r = h.client.post(f"/v1/studies/{study_id}/delivery", headers=token(roles=("admin",)))
        assert r.status_code == 202, r.text
        assert wait_delivery(h, study_id)["delivery"]["status"] == "delivered"
    (study,) = orthanc.qido("studies", StudyInstanceUID=str(sent.StudyInstanceUID))
    assert value(study, PATIENT_ID) == sent.PatientID


def test_on_postgresql_the_record_and_delivery_work_and_retention_purges_the_record(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    """The same way back on PostgreSQL (bytea ciphertexts, the delivery claim), then the purge."""
    if not asyncio.run(pg_reachable()):
        skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
    schema = "gw_pacs_" + secrets.token_hex(6)
    orthanc.start()
    data = phi_dicom(seed=14)
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    try:
        with forwarding_harness(
            tmp_path, None, destination(orthanc, "stow-rs"), database_url=PG_URL, database_schema=schema
        ) as h:
            study_id = submit(h, data)
            assert wait_delivery(h, study_id)["delivery"]["status"] == "delivered"
            pipeline = h.client.app.state.gateway.pipeline  # type: ignore[attr-defined]
            assert asyncio.run(_records(schema)) == 1
            portal = h.client.portal
            assert portal is not None and portal.call(pipeline.purge_expired, timedelta(0)) == 1
            assert asyncio.run(_records(schema)) == 0
        (study,) = orthanc.qido("studies", StudyInstanceUID=str(sent.StudyInstanceUID))
        assert value(study, PATIENT_ID) == sent.PatientID
    finally:
        asyncio.run(drop_schema(PG_URL, schema))


async def _records(schema: str) -> int:
    engine = make_engine(PG_URL, schema)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(text("SELECT count(*) FROM reidentification_records"))).scalar_one()
            )
    finally:
        await engine.dispose()
