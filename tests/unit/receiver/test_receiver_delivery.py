"""Settling a study in the spool: removed once the gateway took or refused it, kept while it is away."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sightline_receiver.clients.gateway import GatewayIntake
from sightline_receiver.core.sealing import Sealer
from sightline_receiver.core.spool import Spool
from sightline_receiver.core.studies import Limits, StudyAssembler
from sightline_receiver.delivery import Forwarder

from tests.unit.receiver.receiver_fixtures import TENANT, dataset, study_instances
from tests.unit.receiver.test_receiver_scp import FakeGateway
from tests.unit.receiver.test_receiver_spool import KEY, files, ids, tamper

IDLE_S, BACKOFF_S, MAX_AGE_S = 10.0, 30.0, 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """The assembler, the spool and the forwarder as the app wires them, on fake clocks, no threads."""

    def __init__(self, tmp: Path, gateway: FakeGateway) -> None:
        self.root = tmp / "spool"
        self.spool = Spool(self.root, Sealer(KEY))
        self.spool.open()
        self.clock, self.wall = Clock(1000.0), Clock(time.time())
        self.assembler = StudyAssembler(Limits(IDLE_S, 16, 1 << 24, 1 << 24), clock=self.clock)
        credential = tmp / "credential"
        credential.write_text("slk_0123456789abcdef_" + "k" * 40)
        intake = GatewayIntake(
            "http://gateway", timeout_s=5, retry_budget_s=0, transport=httpx.MockTransport(gateway.handler)
        )
        self.forwarder = Forwarder(
            self.assembler,
            intake,
            {TENANT: credential},
            self.spool,
            max_age_s=MAX_AGE_S,
            backoff_s=BACKOFF_S,
            backoff_max_s=4 * BACKOFF_S,
            wall_clock=self.wall,
        )

    def receive(self, instances: list[bytes]) -> None:
        """What the SCP does with each instance before it answers success."""
        for part10 in instances:
            study_uid, sop_uid = ids(part10)
            self.assembler.add(TENANT, study_uid, sop_uid, part10)
            self.spool.write(TENANT, study_uid, sop_uid, part10)

    def deliver_due(self, after_s: float) -> list[bool]:
        self.clock.now += after_s
        self.wall.now += after_s
        return [self.forwarder.deliver(s) for s in self.assembler.due()]


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("sightline_receiver_studies_total", {"outcome": outcome}) or 0.0


def sent_uids(gateway: FakeGateway) -> list[list[str]]:
    return [sorted(str(dataset(b).SOPInstanceUID) for b in gateway.instances_of(r)) for r in gateway.requests]


def test_a_study_the_gateway_took_is_removed_from_the_spool(tmp_path: Path) -> None:
    gateway = FakeGateway()
    r = Receiver(tmp_path, gateway)
    r.receive(study_instances(2))
    assert r.deliver_due(IDLE_S) == [True]
    assert files(r.root) == [] and r.spool.usage() == (0, 0)
    assert list((r.root / "studies" / TENANT).iterdir()) == []  # the study's directory went too


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_a_study_the_gateway_refused_for_good_is_deleted_and_counted(tmp_path: Path, status: int) -> None:
    gateway = FakeGateway()
    gateway.status = status
    r = Receiver(tmp_path, gateway)
    r.receive(study_instances(2))
    before = counted("refused")
    assert r.deliver_due(IDLE_S) == [False]
    assert files(r.root) == [] and r.assembler.pending_studies == 0
    assert counted("refused") == before + 1
    assert not any(p.is_file() for p in (r.root / "quarantine").rglob("*"))


@pytest.mark.parametrize("status", [503, 429, 401, 403, 404])
def test_a_study_the_gateway_did_not_answer_for_stays_spooled_and_is_retried_with_backoff(
    tmp_path: Path, status: int
) -> None:
    gateway = FakeGateway()
    gateway.status = status
    r = Receiver(tmp_path, gateway)
    instances = study_instances(3)
    r.receive(instances)
    before = counted("retrying")
    assert r.deliver_due(IDLE_S) == [False]  # the retry budget (0 here) ran out, or our credential/URL
    assert len(files(r.root)) == 3 and counted("retrying") == before + 1
    assert r.assembler.pending_bytes == 0  # held by size only now: the spool is the copy
    assert r.deliver_due(BACKOFF_S - 1) == []
    assert r.deliver_due(1) == [False]  # second failure: the backoff doubles
    assert r.deliver_due(2 * BACKOFF_S - 1) == []
    gateway.status = 200
    assert r.deliver_due(1) == [True]  # read back from the spool
    expected = sorted(str(dataset(b).SOPInstanceUID) for b in instances)
    assert sent_uids(gateway)[-1] == expected
    assert [gateway.instances_of(gateway.requests[-1])[i] in instances for i in range(3)] == [True] * 3
    assert files(r.root) == []


def test_a_study_undelivered_past_the_max_age_is_quarantined(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.status = 503
    r = Receiver(tmp_path, gateway)
    r.receive(study_instances(2))
    r.wall.now = max(p.stat().st_mtime for p in files(r.root))
    assert r.deliver_due(IDLE_S) == [False]
    assert len(files(r.root)) == 2  # kept: young enough
    before = counted("expired")
    r.wall.now += MAX_AGE_S
    assert r.deliver_due(BACKOFF_S) == [False]
    assert files(r.root) == [] and r.assembler.pending_studies == 0
    assert len([p for p in (r.root / "quarantine").rglob("*") if p.is_file()]) == 2
    assert counted("expired") == before + 1


def test_a_spooled_instance_that_does_not_open_is_quarantined_the_rest_delivered(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.status = 503
    r = Receiver(tmp_path, gateway)
    r.receive(study_instances(2))
    r.deliver_due(IDLE_S)
    tamper(files(r.root)[0])
    gateway.status = 200
    assert r.deliver_due(BACKOFF_S) == [True]
    assert [len(i) for i in sent_uids(gateway)][-1] == 1
    assert files(r.root) == []
    assert len([p for p in (r.root / "quarantine").rglob("*") if p.is_file()]) == 1


def test_an_instance_resent_while_its_study_was_delivered_stays_spooled(tmp_path: Path) -> None:
    gateway = FakeGateway()
    r = Receiver(tmp_path, gateway)
    instances = study_instances(2)
    r.receive(instances)
    r.clock.now += IDLE_S
    (study,) = r.assembler.due()
    r.receive(instances[1:])  # the modality sends it again while the study is on its way
    assert r.forwarder.deliver(study)
    assert len(files(r.root)) == 1  # the resent copy: acknowledged, not yet delivered
    assert r.deliver_due(IDLE_S) == [True]
    assert files(r.root) == [] and list((r.root / "studies" / TENANT).iterdir()) == []
