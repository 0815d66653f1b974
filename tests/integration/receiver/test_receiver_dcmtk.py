"""DCMTK (echoscu, storescu) as the modality, the receiver's SCP, the gateway's intake on loopback.

The study goes through the same intake as REST: de-identification first, then the job; nothing
identified is stored. Bad input: an unknown AE title, an unsupported SOP class or transfer
syntax, an association cut mid-transfer.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, JPEG2000Lossless
from sightline_receiver.clients.gateway import Accepted, GatewayIntake
from sightline_receiver.settings import ReceiverSettings

from tests.integration.receiver.conftest import LiveGateway, dicom_tool
from tests.unit.gateway.gateway_fixtures import PHI
from tests.unit.gateway.gateway_fixtures import token as bearer
from tests.unit.receiver.receiver_fixtures import (
    MODALITY_AE,
    TENANT,
    dataset,
    receiver_settings,
    running_receiver,
    study_instances,
)

pytestmark = [pytest.mark.integration]


class RecordingIntake(GatewayIntake):
    """The real HTTP client, remembering where the gateway filed each study."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.accepted: list[Accepted] = []

    def deliver(self, instances: list[bytes], credential_file: Path) -> Accepted:
        accepted = super().deliver(instances, credential_file)
        self.accepted.append(accepted)
        return accepted


def write_study(tmp: Path, n: int = 2, **changes: object) -> list[Path]:
    paths = []
    for i, part10 in enumerate(study_instances(n)):
        ds = dataset(part10)
        for key, value in changes.items():
            setattr(ds, key, value)
            if key == "SOPClassUID":
                ds.file_meta.MediaStorageSOPClassUID = value
        path = tmp / f"instance-{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def dcmtk(
    tool: str, settings: ReceiverSettings, *files: Path, port: int | None = None, aet: str = MODALITY_AE
) -> list[str]:
    """``echoscu``/``storescu`` from ``aet`` to the receiver's SCP (or a proxy's ``port``) with ``files``."""
    return [
        dicom_tool(tool),
        "-aet",
        aet,
        "-aec",
        settings.ae_title,
        "127.0.0.1",
        str(port or settings.dicom_port),
        *map(str, files),
    ]


@pytest.fixture
def receiver(tmp_path: Path, live_gateway: LiveGateway):  # type: ignore[no-untyped-def]
    token = bearer(TENANT, roles=("submitter",), subject="dicom-receiver")["Authorization"].split()[1]
    settings = receiver_settings(tmp_path, live_gateway.url, credential=token)
    intake = RecordingIntake(live_gateway.url, timeout_s=10, retry_budget_s=5)
    with running_receiver(settings, intake):
        yield settings, intake


def test_echoscu_from_an_allowed_ae_title_is_answered(receiver) -> None:  # type: ignore[no-untyped-def]
    settings, _ = receiver
    out = run(dcmtk("echoscu", settings))
    assert out.returncode == 0, out.stdout + out.stderr


def test_storescu_study_is_deidentified_and_diagnosed(
    receiver,
    live_gateway: LiveGateway,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    settings, intake = receiver
    files = write_study(tmp_path, 2)
    caplog.set_level(logging.DEBUG)
    out = run(dcmtk("storescu", settings, *files))
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 20
    while not intake.accepted and time.monotonic() < deadline:
        time.sleep(0.1)
    (accepted,) = intake.accepted
    assert accepted.location and accepted.status_code == 200 and accepted.failed == 0
    study = live_gateway.wait_completed(accepted.location)
    assert study["status"] == "completed" and study["instances"] == 2, study
    result = live_gateway.get(f"{accepted.location}/result").json()
    assert result["status"] == "preliminary" and 0.0 <= result["probability"] <= 1.0
    # What preprocess was given was de-identified; nothing identified was stored or logged.
    assert all(PHI.encode() not in seen for seen in live_gateway.preprocess.seen)
    for path in live_gateway.data_dir.rglob("*"):
        if path.is_file():
            assert PHI.encode() not in path.read_bytes(), path.name
    uids = {dataset(p.read_bytes()).StudyInstanceUID for p in files}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("sightline_receiver"))
    assert PHI not in logged and not any(uid in logged for uid in uids) and MODALITY_AE not in logged


def test_an_unknown_ae_title_is_rejected(receiver) -> None:  # type: ignore[no-untyped-def]
    settings, _ = receiver
    out = run(dcmtk("echoscu", settings, aet="INTRUDER"))
    assert out.returncode != 0
    assert "Calling AE Title Not Recognized" in out.stdout + out.stderr


def test_an_unsupported_sop_class_is_not_stored(receiver, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, intake = receiver
    files = write_study(tmp_path, 1, SOPClassUID=CTImageStorage, Modality="CT")
    out = run(dcmtk("storescu", settings, *files))
    assert "no presentation context" in (out.stdout + out.stderr).lower()
    time.sleep(settings.study_idle_timeout_s + 0.5)
    assert intake.accepted == []


def test_an_unsupported_transfer_syntax_is_not_negotiated(receiver, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, intake = receiver
    (path,) = write_study(tmp_path, 1)
    ds = dataset(path.read_bytes())
    ds.compress(JPEG2000Lossless)  # the receiver does not accept JPEG 2000; DCMTK cannot decode it
    ds.save_as(path, enforce_file_format=True)
    # storescu also proposes uncompressed syntaxes, but cannot convert JPEG 2000 to them.
    out = run(dcmtk("storescu", settings, path))
    assert out.returncode != 0
    assert "jpeg 2000" in (out.stdout + out.stderr).lower(), out.stdout + out.stderr
    time.sleep(settings.study_idle_timeout_s + 0.5)
    assert intake.accepted == []


def cutting_proxy(
    target_port: int, cut_after: int, *, silent: threading.Event | None = None
) -> tuple[int, threading.Thread]:
    """A one-connection TCP proxy that forwards ``cut_after`` bytes towards the SCP, then either drops
    both ends (a reset) or, with ``silent``, stops forwarding but holds both connections open until
    ``silent`` is set (a peer gone quiet mid-PDU: a pulled cable sends neither FIN nor RST)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", target_port))
        listener.close()

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        sent = 0
        try:
            while sent < cut_after and (data := client.recv(min(65536, cut_after - sent))):
                upstream.sendall(data)
                sent += len(data)
            if silent is not None:
                silent.wait(120)
        finally:
            for s in (client, upstream):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                # shutdown() first: close() alone is deferred while ``back`` is blocked in recv() on
                # the same socket, so nothing reached the SCP and the "cut" was a silent peer.
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def large_instance(tmp_path: Path) -> Path:
    """One 3 MiB instance: several PDUs, so a proxy can stop it mid-transfer."""
    (path,) = write_study(tmp_path, 1)
    ds = dataset(path.read_bytes())
    ds.Rows, ds.Columns = 1024, 1024
    ds.PixelData = bytes(1024 * 1024 * 3)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_an_association_cut_mid_transfer_stores_nothing_and_the_scp_carries_on(  # type: ignore[no-untyped-def]
    receiver, tmp_path: Path
) -> None:
    settings, intake = receiver
    path = large_instance(tmp_path)
    proxy_port, thread = cutting_proxy(settings.dicom_port, cut_after=1_000_000)
    out = run(dcmtk("storescu", settings, path, port=proxy_port))
    thread.join(timeout=10)
    assert out.returncode != 0 or "error" in (out.stdout + out.stderr).lower()
    time.sleep(settings.study_idle_timeout_s + 0.5)
    assert intake.accepted == []
    echo = run(dcmtk("echoscu", settings))
    assert echo.returncode == 0, echo.stdout + echo.stderr


def test_a_peer_silent_mid_transfer_is_dropped_after_the_network_timeout(  # type: ignore[no-untyped-def]
    live_gateway: LiveGateway, tmp_path: Path
) -> None:
    """Without a timeout on the accepted socket, pynetdicom's blocking read of the rest of a PDU
    held the association (its thread and slot) for ever, and the receiver could not shut down."""
    token = bearer(TENANT, roles=("submitter",), subject="dicom-receiver")["Authorization"].split()[1]
    settings = receiver_settings(tmp_path, live_gateway.url, credential=token, network_timeout_s=2.0)
    intake = RecordingIntake(live_gateway.url, timeout_s=10, retry_budget_s=5)
    path = large_instance(tmp_path)
    release = threading.Event()
    with running_receiver(settings, intake) as client:
        scp = client.app.state.scp
        proxy_port, thread = cutting_proxy(settings.dicom_port, cut_after=1_000_000, silent=release)
        sender = subprocess.Popen(
            dcmtk("storescu", settings, path, port=proxy_port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while scp.active_associations == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert scp.active_associations == 1, "the association never opened"
            opened = time.monotonic()
            while scp.active_associations and time.monotonic() < opened + settings.network_timeout_s + 8:
                time.sleep(0.1)
            assert scp.active_associations == 0, "a silent peer still holds its association"
        finally:
            release.set()
            sender.kill()
            sender.wait(10)
            thread.join(timeout=10)
        time.sleep(settings.study_idle_timeout_s + 0.5)
        assert intake.accepted == []
