"""State against SQLite and PostgreSQL: migrations, the audit chain, exclusive job claims, crash resume.

PostgreSQL (127.0.0.1:5432, trust auth, database ``test``) gets a fresh schema per test, dropped after.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sightline_common.storage import LocalDirStore
from sightline_gateway.clients.services import DeidOutcome, Inference
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.engine import make_engine, make_sessions, migrate
from sightline_gateway.db.models import Job, Result, Study, Tenant
from sightline_gateway.pipeline import Pipeline
from sqlalchemy import bindparam, func, select, text, update

from tests.integration.gateway.conftest import PG_URL
from tests.unit.gateway.gateway_fixtures import MODEL_REPOSITORY, FakeExplain, FakePreprocess, phi_dicom
from tests.unit.gateway.routing_fixtures import DERM, DERM_B, derm_copy, derm_manifest, repository

pytestmark = pytest.mark.integration


class PassDeid:
    async def deidentify(self, dicom: bytes, tenant: str) -> DeidOutcome:
        return DeidOutcome(dicom, {"actions": {"X": 1}}, "test")


def pipeline(engine: object, tmp_path: Path, **kw: object) -> Pipeline:
    sessions = make_sessions(engine)  # type: ignore[arg-type]
    store = LocalDirStore(tmp_path / "objects")
    return Pipeline(
        sessions=sessions,
        store=store,
        audit=AuditLog(sessions),
        deid=PassDeid(),
        preprocess=kw.pop("preprocess", FakePreprocess()),
        explain=FakeExplain(store),  # type: ignore[arg-type]
        model_repository=kw.pop("model_repository", MODEL_REPOSITORY),
        backoff_s=0.01,
        poll_s=0.02,
        **kw,  # type: ignore[arg-type]
    )


async def tenant(engine: object, name: str = "t1") -> None:
    async with make_sessions(engine)() as s, s.begin():  # type: ignore[arg-type]
        s.add(Tenant(id=name, name=name))


async def test_audit_chain_verifies_and_detects_change_and_deletion(db) -> None:
    engine, _ = db
    log = AuditLog(make_sessions(engine))
    for i in range(5):
        await log.append(
            actor=f"u{i}",
            roles=["clinician"],
            tenant_id="t1",
            action="study.read",
            resource_type="study",
            resource_id=str(i),
            trace_id="a" * 32,
        )
    report = await log.verify()
    assert report.ok and report.events == 5

    # The table refuses UPDATE/DELETE; an attacker with DDL rights drops the guard first.
    async with engine.begin() as conn:
        with pytest.raises(Exception, match="append-only"):
            async with conn.begin_nested():
                await conn.execute(text("UPDATE audit_events SET actor='x' WHERE seq=2"))
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("DROP TRIGGER audit_events_no_change ON audit_events"))
        else:
            await conn.execute(text("DROP TRIGGER audit_events_no_update"))
            await conn.execute(text("DROP TRIGGER audit_events_no_delete"))
        await conn.execute(text("UPDATE audit_events SET actor='mallory' WHERE seq=2"))
    report = await log.verify()
    assert not report.ok and report.problems[0] == {
        "seq": 2,
        "problem": "altered",
        "detail": "content does not match its hash",
    }
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET actor='u1' WHERE seq=2"))
    assert (await log.verify()).ok
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events WHERE seq=3"))
    report = await log.verify()
    assert not report.ok and {p["problem"] for p in report.problems} == {"gap", "broken-link"}


async def test_concurrent_appends_keep_one_chain(db) -> None:
    engine, _ = db
    log = AuditLog(make_sessions(engine))
    await asyncio.gather(
        *(
            log.append(actor="u", roles=[], tenant_id="t", action="a", resource_type="r", resource_id=str(i))
            for i in range(20)
        )
    )
    report = await log.verify()
    assert report.ok and report.events == 20


async def test_a_job_is_claimed_by_exactly_one_worker(db, tmp_path: Path) -> None:
    engine, _ = db
    await tenant(engine)
    a, b = pipeline(engine, tmp_path), pipeline(engine, tmp_path)
    await a.accept(
        tenant="t1", submitted_by="u", instances=[phi_dicom()], idempotency_key=None, explain=False
    )
    claims = await asyncio.gather(a.claim(), b.claim(), a.claim(), b.claim())
    assert sum(c is not None for c in claims) == 1


async def test_a_crashed_job_is_resumed_after_its_lease_and_gives_one_result(db, tmp_path: Path) -> None:
    engine, _ = db
    await tenant(engine)
    crashed = pipeline(engine, tmp_path, lease_s=30)
    accepted = await crashed.accept(
        tenant="t1", submitted_by="u", instances=[phi_dicom()], idempotency_key=None, explain=True
    )
    job = await crashed.claim()
    assert job is not None  # ... and the process dies here, holding the lease
    restarted = pipeline(engine, tmp_path, lease_s=30)
    assert await restarted.claim() is None  # the lease still holds
    await lapse_leases(engine)  # the crashed worker's lease runs out (no heartbeat from the dead)
    again = await restarted.claim()
    assert again is not None and again.id == job.id and again.attempts == 2
    await restarted.run_job(again)
    # The "crashed" worker wakes up late and finishes too: still one result.
    await crashed.run_job(job)
    sessions = make_sessions(engine)
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Result)) == 1
        assert (await s.get(Study, accepted.study.id)).status == "completed"
        assert (await s.scalar(select(Job))).status == "succeeded"


async def test_retention_deletes_images_and_heatmaps_and_is_audited(db, tmp_path: Path) -> None:
    engine, _ = db
    await tenant(engine)
    p = pipeline(engine, tmp_path)
    accepted = await p.accept(
        tenant="t1", submitted_by="u", instances=[phi_dicom()], idempotency_key=None, explain=True
    )
    job = await p.claim()
    await p.run_job(job)
    prefix = f"studies/{accepted.study.id}/"
    assert len(p.store.list(prefix)) == 3  # image, overlay, heatmap
    assert await p.purge_expired(timedelta(days=1)) == 0
    assert await p.purge_expired(timedelta(seconds=0)) == 1
    assert p.store.list(prefix) == []
    events = await p.audit.query(action="retention.purge")
    assert [e.resource_id for e in events] == [accepted.study.id]
    async with make_sessions(engine)() as s:
        assert (await s.get(Study, accepted.study.id)).purged_at is not None
        assert await s.scalar(select(func.count()).select_from(Result)) == 1  # the result itself is kept


def test_api_flow_on_postgresql(tmp_path: Path) -> None:
    """Submit, result, review and audit verification through the app with PostgreSQL state."""
    import asyncpg  # noqa: F401 - the driver the URL names

    from tests.unit.gateway.gateway_fixtures import harness, token

    schema = "gw_api_" + secrets.token_hex(6)
    try:
        with harness(tmp_path, PG_URL, database_schema=schema) as h:
            r = h.submit(mode="sync")
            assert r.status_code == 200, r.text
            study_id = r.headers["Location"].rsplit("/", 1)[1]
            assert (
                h.client.post(
                    f"/v1/studies/{study_id}/reviews",
                    json={"verdict": "uncertain"},
                    headers=token(roles=("clinician",)),
                ).status_code
                == 201
            )
            verify = h.client.get("/v1/audit/verify", headers=token(roles=("auditor",))).json()
            assert verify["ok"] and verify["events"] >= 3
    finally:

        async def drop() -> None:
            engine = make_engine(PG_URL)
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            await engine.dispose()

        asyncio.run(drop())


# ---- a study two models accept: one result per (study, model), whatever crashes ----


class Crash(BaseException):
    """A worker process dying mid-job: it escapes the worker's error handling, as a kill would."""


class CrashOnModel(FakePreprocess):
    """Preprocess that takes the worker down when asked for ``crash_on``."""

    def __init__(self, crash_on: str | None) -> None:
        super().__init__()
        self.crash_on = crash_on

    async def infer(self, dicom: bytes, model: str) -> Inference:
        if model == self.crash_on:
            raise Crash
        return await super().infer(dicom, model)


async def result_models(engine: object, study_id: str) -> list[str]:
    async with make_sessions(engine)() as s:  # type: ignore[arg-type]
        rows = await s.scalars(select(Result.model_name).where(Result.study_id == study_id))
        return sorted(rows.all())


async def lapse_leases(engine: object) -> None:
    """Move every job's lease into the past, as its expiry time passing would (no wall-clock race)."""
    async with make_sessions(engine)() as s, s.begin():  # type: ignore[arg-type]
        past = datetime.now(UTC) - timedelta(seconds=1)
        await s.execute(update(Job).where(Job.lease_expires_at.is_not(None)).values(lease_expires_at=past))


async def test_a_job_crashed_between_two_models_resumes_with_the_second_and_stores_one_result_each(
    db, tmp_path: Path
) -> None:
    engine, _ = db
    await tenant(engine)
    two = {"model_repository": repository(tmp_path, derm_manifest(), derm_copy()), "models": (DERM, DERM_B)}
    crashing = CrashOnModel(crash_on=DERM_B)
    crashed = pipeline(engine, tmp_path, lease_s=30, preprocess=crashing, **two)
    accepted = await crashed.accept(
        tenant="t1", submitted_by="u", instances=[phi_dicom()], idempotency_key=None, explain=True
    )
    assert accepted.study.models == [DERM, DERM_B]
    job = await crashed.claim()
    assert job is not None
    with pytest.raises(Crash):  # the first model ran; the process dies at the second
        await crashed.run_job(job)
    assert await result_models(engine, accepted.study.id) == []
    fresh = FakePreprocess()
    restarted = pipeline(engine, tmp_path, lease_s=30, preprocess=fresh, **two)
    assert await restarted.claim() is None  # the lease still holds
    await lapse_leases(engine)  # the crashed worker's lease runs out (no heartbeat from the dead)
    again = await restarted.claim()
    assert again is not None and again.id == job.id
    await restarted.run_job(again)
    assert fresh.models == [DERM_B]  # the first model's inferences were checkpointed
    # The "crashed" worker wakes up late and finishes too: still one result per model.
    crashing.crash_on = None
    await crashed.run_job(job)
    assert await result_models(engine, accepted.study.id) == [DERM, DERM_B]
    async with make_sessions(engine)() as s:  # type: ignore[arg-type]
        assert (await s.get(Study, accepted.study.id)).status == "completed"
        assert (await s.scalar(select(Job))).status == "succeeded"


async def test_results_stored_before_0008_are_kept_and_a_study_then_takes_one_per_model(db) -> None:
    from alembic import command
    from sightline_gateway.db.migrations import alembic_config
    from sqlalchemy.exc import IntegrityError

    engine, schema = db
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c, schema), "0007"))
    await tenant(engine)
    columns = (
        "id, study_id, tenant_id, model_name, model_version, model_sha256, placeholder, probability, "
        "threshold, refer, instances, status, created_at"
    )
    values = "'{id}', 's1', 't1', '{model}', 1, '', false, 0.7, 0.5, true, '[]', 'preliminary', :now"
    now = {"now": datetime(2026, 1, 1, tzinfo=UTC)}
    stamp = bindparam("now", type_=Result.__table__.c.created_at.type)

    def insert(result_id: str, model: str) -> Any:
        return text(
            f"INSERT INTO results ({columns}) VALUES ({values})".format(id=result_id, model=model)
        ).bindparams(stamp)

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO studies (id, tenant_id, submitted_by, status, explain, instance_keys, "
                "deid_summary, stage_timings, created_at, updated_at) "
                "VALUES ('s1', 't1', 'u', 'completed', false, '[]', '{}', '{}', :now, :now)"
            ).bindparams(stamp),
            now,
        )
        await conn.execute(insert("r1", DERM), now)
    await migrate(engine, schema)
    async with make_sessions(engine)() as s:  # type: ignore[arg-type]
        (kept,) = (await s.scalars(select(Result))).all()
        assert (kept.id, kept.model_name, kept.position, kept.probability) == ("r1", DERM, 0, 0.7)
    async with engine.begin() as conn:  # a second model's result for the same study
        await conn.execute(insert("r2", DERM_B), now)
    with pytest.raises(IntegrityError):  # never a second for the same (study, model)
        async with engine.begin() as conn:
            await conn.execute(insert("r3", DERM), now)
    assert await result_models(engine, "s1") == [DERM, DERM_B]
