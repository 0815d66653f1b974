"""The SCP in process, driven by a pynetdicom SCU: statuses, the allow-list, hand-off to the gateway."""

from __future__ import annotations

import time
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, VLPhotographicImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sightline_receiver.api.scp import StoreSCP
from sightline_receiver.clients.gateway import GatewayIntake
from sightline_receiver.core.refusals import Refused
from sightline_receiver.core.sealing import Sealer
from sightline_receiver.core.spool import Spool
from sightline_receiver.core.studies import Limits, StudyAssembler
from sightline_receiver.settings import ReceiverSettings

from tests.unit.receiver.receiver_fixtures import (
    MODALITY_AE,
    dataset,
    receiver_settings,
    running_receiver,
    study_instances,
)


class FakeGateway:
    """Records STOW-RS requests; answers 202 or the status it is told to."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 202

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health/live":
            return httpx.Response(200, json={"status": "live"})
        self.requests.append(request)
        return httpx.Response(self.status, headers={"Location": "/v1/studies/x"}, json={"code": "c"})

    def intake(self, settings: ReceiverSettings) -> GatewayIntake:
        return GatewayIntake(
            settings.gateway_url, timeout_s=5, retry_budget_s=0, transport=httpx.MockTransport(self.handler)
        )

    def instances_of(self, request: httpx.Request) -> list[bytes]:
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + request.content)
        return [part.get_payload(decode=True) for part in message.iter_parts()]  # type: ignore[union-attr, misc]


def scu(calling: str = MODALITY_AE, contexts: tuple[str, ...] = (VLPhotographicImageStorage,)) -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    for c in contexts:
        ae.add_requested_context(c, ExplicitVRLittleEndian)
    return ae


def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_study_sent_by_an_allowed_modality_reaches_the_gateway_once_idle(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path)
    gw = FakeGateway()
    instances = study_instances(3)
    with running_receiver(settings, gw.intake(settings)) as client:
        assoc = scu().associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        for part10 in instances:
            assert assoc.send_c_store(dataset(part10)).Status == 0x0000
        assoc.release()
        wait_for(lambda: len(gw.requests) == 1)
        ready = client.get("/health/ready").json()
    (request,) = gw.requests
    assert request.url.path == "/dicomweb/studies"
    assert request.headers["x-api-key"].startswith("slk_")
    received = [dataset(b) for b in gw.instances_of(request)]
    assert sorted(d.SOPInstanceUID for d in received) == sorted(dataset(b).SOPInstanceUID for b in instances)
    assert ready["status"] == "ready" and ready["dependencies"] == {"gateway": True}


def test_an_unknown_calling_ae_title_is_rejected_at_association(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path)
    with running_receiver(settings, FakeGateway().intake(settings)):
        assoc = scu("STRANGER").associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x03  # calling AE title not recognised


def test_an_association_to_another_called_ae_title_is_rejected(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path)
    with running_receiver(settings, FakeGateway().intake(settings)):
        assoc = scu().associate("127.0.0.1", settings.dicom_port, ae_title="SOMEONE-ELSE")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 0x07  # called AE title not recognised


def test_an_unsupported_sop_class_gets_no_presentation_context(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path)
    with running_receiver(settings, FakeGateway().intake(settings)):
        assoc = scu(contexts=(CTImageStorage,)).associate(
            "127.0.0.1", settings.dicom_port, ae_title=settings.ae_title
        )
        assert assoc.is_established
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
        assoc.release()


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda b: b, 0xA900, "SOPClassUID differs"),  # a photograph on CT's presentation context
        (lambda b: b[:200], 0xC000, "missing"),  # truncated after the file meta
        (lambda b: b"not DICOM at all", 0xC000, "unparseable"),
    ],
)
def test_an_instance_that_is_not_what_it_claims_is_refused_with_its_status(
    tmp_path: Path, mutate: Any, status: int, reason: str
) -> None:
    settings = receiver_settings(tmp_path, sop_classes=[VLPhotographicImageStorage, CTImageStorage])
    spool = Spool(tmp_path / "spool", Sealer(None))
    scp = StoreSCP(settings, StudyAssembler(Limits(1, 16, 1 << 20, 1 << 20)), spool)
    with pytest.raises(Refused) as exc:
        scp.store(MODALITY_AE, CTImageStorage, mutate(study_instances(1)[0]))
    assert (exc.value.status, reason in exc.value.reason) == (status, True)
    assert scp.assembler.pending_studies == 0
    assert not (tmp_path / "spool").exists()  # nothing spooled


@pytest.mark.parametrize("status", [400, 422])
def test_a_study_the_gateway_refuses_for_good_is_counted_refused_not_retried(
    tmp_path: Path, status: int
) -> None:
    settings = receiver_settings(tmp_path)
    gw = FakeGateway()
    gw.status = status
    with running_receiver(settings, gw.intake(settings)) as client:
        assoc = scu().associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        assert assoc.send_c_store(dataset(study_instances(1)[0])).Status == 0x0000
        assoc.release()
        wait_for(lambda: len(gw.requests) == 1)
        time.sleep(0.3)
        metrics = client.get("/metrics").text
    assert len(gw.requests) == 1
    assert 'sightline_receiver_studies_total{outcome="refused"}' in metrics


def test_an_instance_the_spool_cannot_store_is_refused_with_out_of_resources(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path)
    gw = FakeGateway()
    with running_receiver(settings, gw.intake(settings)) as client:
        studies = settings.spool_dir / "studies"
        studies.rename(settings.spool_dir / "elsewhere")
        studies.write_bytes(b"")  # every spool write fails from now on (ENOTDIR)
        assoc = scu().associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        answer = assoc.send_c_store(dataset(study_instances(1)[0]))
        assoc.release()
        time.sleep(settings.study_idle_timeout_s + 0.5)
        metrics = client.get("/metrics").text
        ready = client.get("/health/ready")
    assert answer.Status == 0xA700 and "not stored durably" in answer.ErrorComment
    assert gw.requests == []  # not acknowledged, so not held either: the sender retries
    assert "sightline_receiver_spool_write_failures_total 1.0" in metrics
    assert ready.status_code == 503 and ready.json()["checks"]["spool"] is False


def test_a_study_acknowledged_while_the_gateway_is_down_is_delivered_after_a_restart(tmp_path: Path) -> None:
    settings = receiver_settings(tmp_path, shutdown_grace_s=0.5)
    down, up = FakeGateway(), FakeGateway()
    down.status = 503
    instances = study_instances(2)
    with running_receiver(settings, down.intake(settings)) as client:
        assoc = scu().associate("127.0.0.1", settings.dicom_port, ae_title=settings.ae_title)
        assert [assoc.send_c_store(dataset(b)).Status for b in instances] == [0x0000, 0x0000]
        assoc.release()
        wait_for(lambda: len(down.requests) == 1)
        wait_for(lambda: 'outcome="retrying"' in client.get("/metrics").text)
    with running_receiver(settings, up.intake(settings)) as client:
        wait_for(lambda: len(up.requests) == 1)
        wait_for(lambda: client.app.state.spool.usage() == (0, 0))  # type: ignore[attr-defined]
        metrics = client.get("/metrics").text
    (request,) = up.requests
    sent = sorted(dataset(b).SOPInstanceUID for b in up.instances_of(request))
    assert sent == sorted(dataset(b).SOPInstanceUID for b in instances)
    assert "sightline_receiver_spool_recovered_studies_total" in metrics
