"""Routing through the API: each study reaches the model that accepts it; one no enabled model
accepts is refused with 422 before de-identification, and nothing of it is kept."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sightline_gateway.clients.services import Deid, DeidOutcome

from tests.unit.gateway.gateway_fixtures import PHI, PLANTED, Harness, harness, phi_dicom, token
from tests.unit.gateway.routing_fixtures import CHEST, DERM, chest_xray, ct_slice, repository
from tests.unit.gateway.test_gateway_stow import FAILED, REASON, REFERENCED, SOP_INSTANCE, stow, uid


class CountingDeid:
    """Passes through to the real deid app, counting the instances it was sent."""

    def __init__(self, inner: Deid) -> None:
        self.inner, self.calls = inner, 0

    async def deidentify(self, dicom: bytes, tenant: str) -> DeidOutcome:
        self.calls += 1
        return await self.inner.deidentify(dicom, tenant)


class Routed:
    def __init__(self, h: Harness, tmp: Path) -> None:
        self.h, self.tmp = h, tmp
        intake = h.client.app.state.gateway.pipeline.intake  # type: ignore[attr-defined]
        self.deid = CountingDeid(intake.deid)
        intake.deid = self.deid

    def rows(self, table: str) -> int:
        with sqlite3.connect(self.tmp / "gw.db") as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def objects(self) -> list[str]:
        return [key for key, _ in self.h.store.list("studies/")]

    def assert_nothing_kept(self) -> None:
        assert self.rows("studies") == 0 and self.rows("jobs") == 0 and self.rows("results") == 0
        assert self.objects() == []
        assert self.deid.calls == 0


@pytest.fixture
def routed(tmp_path: Path) -> Iterator[Routed]:
    with harness(tmp_path, model_repository=repository(tmp_path), models=[DERM, CHEST]) as h:
        yield Routed(h, tmp_path)


def submit(r: Routed, data: bytes, tenant: str = "hospital-a", **params: Any) -> Any:
    return r.h.submit(data, headers=token(tenant=tenant), **params)


def test_a_chest_radiograph_is_run_by_the_chest_model_only(routed: Routed) -> None:
    r = submit(routed, chest_xray(), mode="sync")
    assert r.status_code == 200, r.text
    assert r.json()["model"]["name"] == CHEST
    assert routed.h.preprocess.models == [CHEST]
    assert routed.h.explain.requests[-1].model_name == CHEST
    study = routed.h.client.get(r.headers["Location"], headers=token()).json()
    assert study["models"] == [CHEST]


def test_a_dermoscopy_photograph_is_run_by_the_dermoscopy_model_only(routed: Routed) -> None:
    r = submit(routed, phi_dicom(), mode="sync")
    assert r.status_code == 200, r.text
    assert r.json()["model"]["name"] == DERM and routed.h.preprocess.models == [DERM]


def refused_count(r: Routed) -> float:
    for line in r.h.client.get("/metrics").text.splitlines():
        if line.startswith('sightline_routing_decisions_total{model="none"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_ct_is_refused_with_422_before_anything_is_kept(routed: Routed) -> None:
    before = refused_count(routed)
    r = submit(routed, ct_slice())
    assert r.status_code == 422, r.text
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["code"] == "no-model-accepts"
    assert problem["refused_by"] == {DERM: "modality", CHEST: "modality"}
    assert PHI not in r.text and "CT" not in problem["detail"]
    routed.assert_nothing_kept()
    assert routed.h.preprocess.calls == 0
    assert refused_count(routed) == before + 1


def test_a_tenant_with_the_chest_model_disabled_gets_422_for_a_radiograph(tmp_path: Path) -> None:
    with harness(
        tmp_path,
        model_repository=repository(tmp_path),
        models=[DERM, CHEST],
        models_enabled={"derm-clinic": [DERM]},
    ) as h:
        routed = Routed(h, tmp_path)
        r = submit(routed, chest_xray(), tenant="derm-clinic")
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "no-model-accepts"
        assert r.json()["refused_by"] == {DERM: "modality", CHEST: "not-enabled-for-tenant"}
        routed.assert_nothing_kept()
        # Another tenant (no entry: every served model) still reaches the chest model.
        assert submit(routed, chest_xray(), tenant="hospital-b").status_code == 202


def test_a_study_mixing_a_photograph_and_a_radiograph_is_refused_whole(routed: Routed) -> None:
    boundary = "b-mixed"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + i + b"\r\n"
            for i in (phi_dicom(), chest_xray())
        )
        + f"--{boundary}--\r\n".encode()
    )
    r = routed.h.client.post(
        "/v1/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            **token(),
        },
    )
    assert r.status_code == 422 and r.json()["code"] == "no-model-accepts"
    routed.assert_nothing_kept()


def test_stow_mixed_instances_store_only_those_the_chosen_model_accepts(routed: Routed) -> None:
    photos, scan = [phi_dicom(seed=1), phi_dicom(seed=2)], ct_slice(seed=3)
    r = stow(routed.h, photos[0], scan, photos[1])
    assert r.status_code == 202, r.text
    body = r.json()
    (failed,) = body[FAILED]["Value"]
    assert failed[SOP_INSTANCE]["Value"] == [uid(scan)] and failed[REASON]["Value"] == [0x0122]
    assert [i[SOP_INSTANCE]["Value"][0] for i in body[REFERENCED]["Value"]] == [uid(p) for p in photos]
    assert routed.deid.calls == 2  # the CT was never sent to de-identification
    study = routed.h.client.get(r.headers["Location"], headers=token()).json()
    assert study["instances"] == 2 and study["models"] == [DERM]


def test_stow_of_radiographs_goes_to_the_chest_model(routed: Routed) -> None:
    r = stow(routed.h, chest_xray(seed=1), chest_xray(seed=2))
    assert r.status_code == 200, r.text
    study = routed.h.client.get(r.headers["Location"], headers=token()).json()
    assert study["models"] == [CHEST]


def test_stow_with_nothing_any_model_accepts_is_409_and_keeps_nothing(routed: Routed) -> None:
    r = stow(routed.h, ct_slice(seed=1), chest_xray(seed=2, body_part="KNEE"))
    assert r.status_code == 409, r.text
    assert [f[REASON]["Value"] for f in r.json()[FAILED]["Value"]] == [[0x0122], [0x0122]]
    routed.assert_nothing_kept()


def test_the_model_list_says_which_models_a_tenants_studies_can_reach(tmp_path: Path) -> None:
    with harness(
        tmp_path, model_repository=repository(tmp_path), models=[DERM], models_enabled={"clinic": []}
    ) as h:
        listed = {m["name"]: m for m in h.client.get("/v1/models", headers=token()).json()}
        assert (listed[DERM]["served"], listed[DERM]["enabled"]) == (True, True)
        assert (listed[CHEST]["served"], listed[CHEST]["enabled"]) == (False, False)  # in the repository only
        mine = h.client.get("/v1/models", headers=token(tenant="clinic")).json()
        assert [m["enabled"] for m in mine] == [False, False]


def test_a_study_stored_before_routing_runs_on_the_first_served_model(routed: Routed) -> None:
    from sightline_gateway.core.workflow import study_model
    from sightline_gateway.db.models import Study

    assert study_model(Study(models=None)) is None and study_model(Study(models=[CHEST])) == CHEST
    workflow = routed.h.client.app.state.gateway.pipeline.workflow  # type: ignore[attr-defined]
    assert workflow.manifest(Study(models=None)).name == DERM
    assert workflow.manifest(Study(models=[CHEST])).name == CHEST


# ---- accountability: every refusal is audited, naming the caller and the rules, never the study ----


def auditor() -> dict[str, str]:
    return token(roles=("auditor",))


def audit_events(r: Routed, **params: Any) -> list[dict[str, Any]]:
    page = r.h.client.get("/v1/audit", params={"limit": 1000, **params}, headers=auditor())
    assert page.status_code == 200, page.text
    events: list[dict[str, Any]] = page.json()["events"]
    return events


def study_values(*instances: bytes) -> list[str]:
    """What the study itself says that must never reach the audit trail: UIDs, planted PHI, dates."""
    values = [PHI, *PLANTED, "19700101", "20240102"]
    for data in instances:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        values += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return values


def assert_no_study_values(r: Routed, *instances: bytes) -> None:
    trail = json.dumps(audit_events(r))
    for value in study_values(*instances):
        assert value not in trail


def assert_chain_verifies(r: Routed) -> None:
    report = r.h.client.get("/v1/audit/verify", headers=auditor()).json()
    assert report["ok"] is True and report["problems"] == [], report


def test_a_refused_ct_leaves_one_audit_event_naming_the_caller_and_the_rules(routed: Routed) -> None:
    scan = ct_slice(seed=7)
    r = routed.h.submit(scan, headers=token(subject="pacs-bridge", roles=("submitter",)))
    assert r.status_code == 422, r.text
    (event,) = audit_events(routed, action="study.refused")
    assert (event["actor"], event["roles"], event["tenant_id"]) == (
        "pacs-bridge",
        ["submitter"],
        "hospital-a",
    )
    assert event["outcome"] == "refused" and event["resource_type"] == "routing"
    assert event["resource_id"] == f"{DERM}=modality;{CHEST}=modality"
    assert "CT" not in json.dumps(event)  # the rule, never the modality the study has
    assert_no_study_values(routed, scan)
    assert [e["action"] for e in audit_events(routed, actor="pacs-bridge")] == ["study.refused"]
    assert_chain_verifies(routed)


def test_a_refusal_for_a_model_not_enabled_says_so_in_the_audit(tmp_path: Path) -> None:
    with harness(
        tmp_path,
        model_repository=repository(tmp_path),
        models=[DERM, CHEST],
        models_enabled={"derm-clinic": [DERM]},
    ) as h:
        routed = Routed(h, tmp_path)
        assert submit(routed, chest_xray(), tenant="derm-clinic").status_code == 422
        events = h.client.get(
            "/v1/audit",
            params={"action": "study.refused"},
            headers=token(tenant="derm-clinic", roles=("auditor",)),
        ).json()["events"]
        assert [(e["tenant_id"], e["resource_id"]) for e in events] == [
            ("derm-clinic", f"{DERM}=modality;{CHEST}=not-enabled-for-tenant")
        ]
        assert audit_events(routed, action="study.refused") == []  # hospital-a sees only its own


def test_stow_with_nothing_acceptable_leaves_one_audit_event_with_the_counts(routed: Routed) -> None:
    instances = (ct_slice(seed=1), chest_xray(seed=2, body_part="KNEE"))
    r = stow(routed.h, *instances)
    assert r.status_code == 409, r.text
    (event,) = audit_events(routed, action="study.refused")
    assert (event["actor"], event["roles"], event["tenant_id"]) == (
        "dr-test",
        ["clinician", "submitter"],
        "hospital-a",
    )
    assert event["outcome"] == "refused" and event["resource_type"] == "routing"
    assert event["resource_id"] == f"refused=2/2;{DERM}=modality;{CHEST}=body-part+modality"
    assert "study.create" not in [e["action"] for e in audit_events(routed)]
    assert_no_study_values(routed, *instances)
    assert "KNEE" not in json.dumps(audit_events(routed))
    assert_chain_verifies(routed)


def test_stow_storing_some_audits_the_study_and_the_refused_instances(routed: Routed) -> None:
    instances = (phi_dicom(seed=1), ct_slice(seed=2), phi_dicom(seed=3))
    r = stow(routed.h, *instances)
    assert r.status_code == 202, r.text
    (refused,) = audit_events(routed, action="study.refused")
    assert refused["resource_id"] == f"refused=1/3;{DERM}=modality;{CHEST}=modality"
    (created,) = audit_events(routed, action="study.create")
    assert r.headers["Location"].endswith(created["resource_id"])
    assert_no_study_values(routed, *instances)
    assert_chain_verifies(routed)


def test_accepted_studies_leave_no_refusal_in_the_audit(routed: Routed) -> None:
    assert submit(routed, chest_xray()).status_code == 202
    assert stow(routed.h, phi_dicom(seed=1)).status_code == 200
    assert audit_events(routed, action="study.refused") == []
