"""`POST /v1/admin/models/{name}/promote|rollback`: a deliberately worse candidate is refused,
an equal one is served, a rollback returns to the version before; each decision is in the
hash-chained audit log with both reports' sha256 and the actor."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sightline_gateway.core.shadow import ShadowComparison
from sightline_gateway.db.models import ModelDecision, ModelServing

from .gateway_fixtures import MODEL_REPOSITORY, Harness, harness, token


def admin() -> dict[str, str]:
    return token(tenant="platform", roles=("admin",), subject="ops-lead")


def _repository(tmp: Path, candidate_auroc: float | None = None) -> Path:
    """derm-cnn with a version 2 whose files are version 1's, and its own evaluation report."""
    src, dst = MODEL_REPOSITORY / "derm-cnn", tmp / "repo" / "derm-cnn"
    (dst / "evaluation" / "2").mkdir(parents=True)
    for name in ("manifest.json", "config.pbtxt", "MODEL_CARD.md"):
        shutil.copy(src / name, dst / name)
    (dst / "1").symlink_to(src / "1", target_is_directory=True)
    (dst / "2").mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    (dst / "2" / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    report = json.loads((src / "evaluation" / "evaluation.json").read_text())
    shutil.copy(src / "evaluation" / "evaluation.json", dst / "evaluation" / "evaluation.json")
    report["version"] = 2
    if candidate_auroc is not None:
        report["overall"]["auroc"]["value"] = candidate_auroc
    (dst / "evaluation" / "2" / "evaluation.json").write_text(json.dumps(report))
    return tmp / "repo"


def _shadow(h: Harness, studies: int, disagreements: int) -> None:
    lifecycle = h.client.app.state.gateway.lifecycle  # type: ignore[attr-defined]

    async def go() -> None:
        for n in range(studies):
            await lifecycle.record_shadow(
                ShadowComparison(
                    model="derm-cnn",
                    tenant="hospital-a",
                    serving_version=1,
                    candidate_version=2,
                    serving_probability=0.9,
                    candidate_probability=0.1 if n < disagreements else 0.8,
                    serving_threshold=0.5,
                    candidate_threshold=0.5,
                ),
                f"study-{n}",
            )

    h.client.portal.call(go)


def _rows(h: Harness, model: type[Any]) -> list[Any]:
    sessions = h.client.app.state.gateway.sessions  # type: ignore[attr-defined]
    from sqlalchemy import select

    async def go() -> list[Any]:
        async with sessions() as session:
            return list((await session.scalars(select(model))).all())

    return h.client.portal.call(go)  # type: ignore[no-any-return]


def _audit(h: Harness, action: str, tenant: str = "platform") -> list[dict[str, Any]]:
    r = h.client.get("/v1/audit", params={"action": action}, headers=token(tenant=tenant, roles=("auditor",)))
    assert r.status_code == 200, r.text
    items = r.json()
    return list(items["events"] if isinstance(items, dict) else items)


def test_a_worse_candidate_is_refused_with_the_failing_gate_and_the_refusal_is_audited(
    tmp_path: Path,
) -> None:
    repo = _repository(tmp_path, candidate_auroc=0.80)  # serving 0.8846, CI 0.8642-0.9034
    with harness(tmp_path, model_repository=repo) as h:
        _shadow(h, 200, 0)
        r = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 2}, headers=admin())
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["allowed"] is False and body["applied"] is False
        failed = [g for g in body["gates"] if not g["passed"]]
        assert [g["gate"] for g in failed] == ["auroc"]
        assert "0.8000" in failed[0]["reason"]
        assert _rows(h, ModelServing) == []
        (decision,) = _rows(h, ModelDecision)
        assert decision.applied is False and decision.actor == "ops-lead"
        events = _audit(h, "model.promote")
        assert [e["outcome"] for e in events] == ["refused"]
        assert events[0]["resource_id"] == f"derm-cnn/1->2 sha256:{body['digest']}"


def test_an_equal_candidate_with_agreeing_shadow_traffic_is_promoted_then_rolled_back(tmp_path: Path) -> None:
    repo = _repository(tmp_path)
    with harness(tmp_path, model_repository=repo) as h:
        _shadow(h, 200, 3)
        r = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 2}, headers=admin())
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["allowed"] is True and body["applied"] is True
        assert body["from_version"] == 1 and body["to_version"] == 2
        serving_raw = (repo / "derm-cnn" / "evaluation" / "evaluation.json").read_bytes()
        candidate_raw = (repo / "derm-cnn" / "evaluation" / "2" / "evaluation.json").read_bytes()
        assert body["serving_report_sha256"] == hashlib.sha256(serving_raw).hexdigest()
        assert body["candidate_report_sha256"] == hashlib.sha256(candidate_raw).hexdigest()
        (row,) = _rows(h, ModelServing)
        assert (row.serving_version, row.previous_version, row.updated_by) == (2, 1, "ops-lead")
        (decision,) = _rows(h, ModelDecision)
        assert decision.record["candidate_report_sha256"] == body["candidate_report_sha256"]
        assert decision.digest == body["digest"]

        again = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 2}, headers=admin())
        assert again.status_code in (400, 422) and "already serving" in again.text

        back = h.client.post("/v1/admin/models/derm-cnn/rollback", json={}, headers=admin())
        assert back.status_code == 200, back.text
        assert (back.json()["from_version"], back.json()["to_version"]) == (2, 1)
        (row,) = _rows(h, ModelServing)
        assert (row.serving_version, row.previous_version) == (1, None)
        none_left = h.client.post("/v1/admin/models/derm-cnn/rollback", json={}, headers=admin())
        assert none_left.status_code in (400, 422) and "no earlier version" in none_left.text

        versions = h.client.get("/v1/admin/models/derm-cnn/versions", headers=admin()).json()
        assert (versions["serving_version"], versions["previous_version"]) == (1, None)
        assert [(d["action"], d["applied"]) for d in versions["decisions"]] == [
            ("rollback", True),
            ("promote", True),
        ]
        assert versions["decisions"][1]["candidate_report_sha256"] == body["candidate_report_sha256"]

        # The attempts that never reached the gates are audited too, with why.
        assert [e["outcome"] for e in _audit(h, "model.promote")] == ["success", "invalid-input"]
        assert [e["outcome"] for e in _audit(h, "model.rollback")] == ["success", "invalid-input"]
        verify = h.client.get("/v1/audit/verify", headers=token(tenant="platform", roles=("auditor",)))
        assert verify.json()["ok"] is True


def test_too_few_shadowed_studies_refuse_an_otherwise_equal_candidate(tmp_path: Path) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        _shadow(h, 10, 0)
        r = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 2}, headers=admin())
        assert r.status_code == 409
        assert [g["gate"] for g in r.json()["gates"] if not g["passed"]] == ["shadow-disagreement"]


@pytest.mark.parametrize(
    ("tenant", "roles"), [("platform", ("submitter", "clinician")), ("hospital-a", ("admin",))]
)
def test_only_the_platform_tenants_admins_promote(
    tmp_path: Path, tenant: str, roles: tuple[str, ...]
) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path), lifecycle_admin_tenant="platform") as h:
        r = h.client.post(
            "/v1/admin/models/derm-cnn/promote",
            json={"version": 2},
            headers=token(tenant=tenant, roles=roles),
        )
        assert r.status_code == 403
        assert _rows(h, ModelDecision) == []
        (event,) = _audit(h, "model.promote", tenant)
        assert (event["outcome"], event["resource_id"]) == ("forbidden", "derm-cnn/2")


def test_an_unknown_version_or_model_is_refused_with_a_reason(tmp_path: Path) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        r = h.client.post("/v1/admin/models/derm-cnn/promote", json={"version": 7}, headers=admin())
        assert r.status_code == 404 and "no version 7" in r.text
        assert [e["outcome"] for e in _audit(h, "model.promote")] == ["not-found"]
        r = h.client.post("/v1/admin/models/nope/promote", json={"version": 2}, headers=admin())
        assert r.status_code == 404


def test_two_promotions_at_once_change_the_serving_version_once(tmp_path: Path) -> None:
    """Two admins promote together: one decision applies; the other sees the change and is told
    to retry; the audit chain holds."""
    import asyncio

    from sightline_common.errors import InvalidInput

    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        _shadow(h, 200, 0)
        lifecycle = h.client.app.state.gateway.lifecycle  # type: ignore[attr-defined]

        async def promote(actor: str) -> Any:
            return await lifecycle.decide(
                action="promote",
                model="derm-cnn",
                version=2,
                actor=actor,
                roles=["admin"],
                tenant="platform",
                trace_id=None,
            )

        async def both() -> list[Any]:
            return list(await asyncio.gather(promote("a"), promote("b"), return_exceptions=True))

        outcomes = h.client.portal.call(both)
        applied = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(applied) == 1 and applied[0][1]["applied"] is True
        assert len(refused) == 1 and isinstance(refused[0], InvalidInput)
        (row,) = _rows(h, ModelServing)
        assert (row.serving_version, row.previous_version) == (2, 1)
        assert len(_rows(h, ModelDecision)) == 1
        verify = h.client.get("/v1/audit/verify", headers=token(tenant="platform", roles=("auditor",)))
        assert verify.json()["ok"] is True
