"""Helpers for receiver tests: settings on free ports, a receiver app running its SCP, study bytes."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sightline_receiver.app import create_app
from sightline_receiver.clients.gateway import GatewayIntake
from sightline_receiver.settings import ReceiverSettings

from tests.conftest import free_ports
from tests.unit.gateway.gateway_fixtures import phi_dicom

TENANT = "hospital-a"
MODALITY_AE = "DERMSCOPE1"


def spool_key(tmp: Path) -> Path:
    """A spool key file (32 random bytes, base64), made once per directory."""
    path = tmp / "spool.key"
    if not path.exists():
        path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    return path


def receiver_settings(
    tmp: Path, gateway_url: str = "http://gateway.invalid", credential: str | None = None, **overrides: Any
) -> ReceiverSettings:
    """Settings on free ports, with an encrypted spool under ``tmp``; ``credential``: what the receiver
    shows the gateway (default: an API key)."""
    credential_file = tmp / "gateway-credential"
    credential_file.write_text(credential or "slk_0123456789abcdef_" + "k" * 40)
    http_port, dicom_port = free_ports(2)
    values: dict[str, Any] = {
        "environment": "test",
        "port": http_port,
        "dicom_port": dicom_port,
        "gateway_url": gateway_url,
        "tenants": [
            {"tenant": TENANT, "calling_ae_titles": [MODALITY_AE], "credential_file": credential_file}
        ],
        "study_idle_timeout_s": 0.5,
        "delivery_retry_budget_s": 0.0,
        "spool_dir": tmp / "spool",
        "spool_key_file": spool_key(tmp),
    }
    values.update(overrides)
    return ReceiverSettings(**values)


@contextmanager
def running_receiver(settings: ReceiverSettings, intake: GatewayIntake | None = None) -> Iterator[TestClient]:
    """The receiver app with its lifespan running: the SCP listens on ``settings.dicom_port``."""
    app = create_app(settings, intake)
    with TestClient(app) as client:
        yield client


def study_instances(n: int = 2, seed: int = 0) -> list[bytes]:
    """``n`` instances of one synthetic study with planted fake PHI (gateway_fixtures.phi_dicom)."""
    study_uid, series_uid = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        ds = dcmread(io.BytesIO(phi_dicom(seed=seed + i)))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, i + 1
        out.append(_part10(ds))
    return out


def dataset(part10: bytes) -> Dataset:
    return dcmread(io.BytesIO(part10))


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
