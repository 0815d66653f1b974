"""Issue 13: the audit chain's head is anchored outside the database, so deleting the newest
events (which leaves a chain that still links) is reported by GET /v1/audit/verify."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from sightline_gateway.core.audit import GENESIS, Anchor, event_hash, verify
from sightline_gateway.core.audit_anchors import HEAD_KEY
from sightline_gateway.db.models import AuditEvent
from sqlalchemy import delete, text

from tests.unit.gateway.gateway_fixtures import harness, token


def auditor() -> dict[str, str]:
    """Minted per use: a token made at import expires before a long run reaches the test."""
    return token(roles=("auditor",))



def _events(h, n: int) -> None:
    for _ in range(n):
        assert h.client.get("/v1/audit", headers=auditor()).status_code == 200  # each read is audited


def _delete_newest(h, keep: int) -> None:
    gw = h.client.app.state.gateway

    async def go() -> None:
        # Someone with the database's owner rights: drop the append-only trigger, then delete.
        async with gw.sessions() as session, session.begin():
            await session.execute(text("DROP TRIGGER audit_events_no_delete"))
            await session.execute(delete(AuditEvent).where(AuditEvent.seq > keep))

    h.client.portal.call(go)


def test_deleting_the_newest_events_is_reported_against_the_anchor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with harness(tmp_path, audit_anchor_interval_s=3600) as h:
        _events(h, 5)
        gw = h.client.app.state.gateway
        with caplog.at_level(logging.INFO, logger="sightline_gateway.core.audit_anchors"):
            anchor = h.client.portal.call(gw.audit.anchors.anchor)
        assert anchor is not None and anchor.seq >= 5
        assert f"seq={anchor.seq} head={anchor.hash}" in caplog.text  # the log line is a second copy
        assert json.loads(h.store.get(HEAD_KEY))["seq"] == anchor.seq

        before = h.client.get("/v1/audit/verify", headers=auditor()).json()
        assert before["ok"] is True, before

        # Delete the anchored event and everything after it: the rest still links.
        _delete_newest(h, keep=anchor.seq - 2)
        after = h.client.get("/v1/audit/verify", headers=auditor()).json()
        assert after["ok"] is False
        assert [p["problem"] for p in after["problems"]] == ["truncated"]
        assert f"..{anchor.seq} " in after["problems"][0]["detail"]


def test_rewritten_newest_events_differ_from_the_anchor() -> None:
    events, prev = [], GENESIS
    for seq in (1, 2):
        ev = {"seq": seq, "id": str(seq), "action": "study.create", "prev_hash": prev}
        ev["hash"] = prev = event_hash(ev)
        events.append(ev)
    assert verify(events, anchor=Anchor(seq=2, hash=prev, at="2026-12-01T00:00:00+00:00")).ok
    report = verify(events, anchor=Anchor(seq=2, hash="0" * 63 + "1", at="2026-12-01T00:00:00+00:00"))
    assert "anchor-mismatch" in [p["problem"] for p in report.problems]


def test_the_gateway_anchors_at_its_interval(tmp_path: Path) -> None:
    with harness(tmp_path, audit_anchor_interval_s=0.05) as h:
        _events(h, 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if h.store.exists(HEAD_KEY) and json.loads(h.store.get(HEAD_KEY))["seq"] >= 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no anchor written")
