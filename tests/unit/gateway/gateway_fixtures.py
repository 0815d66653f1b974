"""Helpers for gateway tests: synthetic DICOM with planted fake PHI, fake services, an app factory.

Nothing here is real patient data. Every planted value contains ``ZQXPHI`` so a test can search
any output for it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sightline_common.contracts import ExplainRequest, ExplainResponse, HeatmapPeak
from sightline_common.errors import DependencyUnavailable, UnprocessableInput
from sightline_gateway.app import Dependencies, create_app
from sightline_gateway.clients.services import HttpDeid, Inference
from sightline_gateway.core.auth import mint_dev_token
from sightline_gateway.db.engine import make_engine, make_sessions
from sightline_gateway.db.models import Job, Result
from sightline_gateway.settings import GatewaySettings
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[3]
MODEL_REPOSITORY = REPO / "model_repository"
SECRET = "unit-test-secret-" + "x" * 24
PHI = "ZQXPHI"
PLANTED = (f"{PHI}DOE^JANE", f"{PHI}MRN12345", f"{PHI}ACC999", f"{PHI}St Elsewhere Hospital", f"{PHI}Dr^Who")


def phi_dicom(rows: int = 64, cols: int = 64, seed: int = 0) -> bytes:
    """A small RGB VL Photographic image (XC) with fake PHI in the usual places."""
    rng = np.random.default_rng(seed)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "XC"
    ds.PatientName = PLANTED[0]
    ds.PatientID = PLANTED[1]
    ds.AccessionNumber = PLANTED[2]
    ds.InstitutionName = PLANTED[3]
    ds.ReferringPhysicianName = PLANTED[4]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rng.integers(0, 255, (rows, cols, 3), dtype=np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def png_bytes(seed: int = 0) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def deid_app() -> Any:
    from sightline_deid.app import create_app as create_deid
    from sightline_deid.settings import DeidSettings

    return create_deid(DeidSettings(environment="development", port=1, recipe="sightline-basic"))  # type: ignore[call-arg]


class FakePreprocess:
    """Stands in for preprocess + Triton: parses the DICOM and returns a fixed logit (per model
    name in ``logits``, else ``logit``)."""

    def __init__(self, logit: float = 1.0) -> None:
        self.logit = logit
        self.logits: dict[str, float] = {}
        self.calls = 0
        self.fail_times = 0
        self.refuse = False
        self.delay_s = 0.0
        self.seen: list[bytes] = []
        self.models: list[str] = []
        self.out_of_scope_score: float | None = None  # a model with the score sends it
        #: (model, version) -> logit, for a study run on a named version; the version asked for
        #: (None: preprocess's choice) in ``versions``.
        self.version_logits: dict[tuple[str, int], float] = {}
        self.versions: list[int | None] = []

    async def infer(self, dicom: bytes, model: str, version: int | None = None) -> Inference:
        self.calls += 1
        self.models.append(model)
        self.versions.append(version)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.seen.append(dicom)
        if self.refuse:
            raise UnprocessableInput("preprocess: modality not accepted by this model")
        if self.fail_times > 0:
            self.fail_times -= 1
            raise DependencyUnavailable("preprocess unavailable (UNAVAILABLE)")
        logit = self.logits.get(model, self.logit)
        if version is not None:
            logit = self.version_logits.get((model, version), logit)
        p = 1 / (1 + np.exp(-logit))
        return Inference(
            float(p),
            logit,
            {"mean_r": 0.5},
            version or 1,
            "1",
            True,
            out_of_scope_score=self.out_of_scope_score,
        )


class FakeExplain:
    """Writes a tiny overlay and heatmap into the store, as the explain service does."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls = 0
        self.unavailable = False
        self.requests: list[ExplainRequest] = []

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        self.calls += 1
        self.requests.append(request)
        if self.unavailable:
            raise DependencyUnavailable("explain unavailable (503)")
        overlay, heatmap = request.output_prefix + "overlay.png", request.output_prefix + "heatmap.npy"
        self.store.put(overlay, png_bytes(), "image/png")
        self.store.put(heatmap, b"\x93NUMPY fake", "application/octet-stream")
        return ExplainResponse(
            model_name=request.model_name,
            model_version=request.model_version,
            model_sha256="0" * 64,
            target=request.target,
            heatmap_key=heatmap,
            overlay_key=overlay,
            peak=HeatmapPeak(row=0.5, col=0.5),
            fraction_above_half=0.1,
            duration_ms=1.0,
        )


def settings(tmp: Path, database_url: str | None = None, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "port": 1,
        "database_url": database_url or f"sqlite+aiosqlite:///{tmp / 'gw.db'}",
        "storage_dir": tmp / "objects",
        "deid_url": "http://deid.invalid",
        "preprocess_grpc": "127.0.0.1:1",
        "preprocess_http": "http://preprocess.invalid",
        "explain_url": "http://explain.invalid",
        "model_repository": MODEL_REPOSITORY,
        "jwt_secret": SECRET,
        "worker_concurrency": 1,
        "job_backoff_s": 0.02,
        "job_poll_s": 0.05,
        "retention_interval_s": 3600,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def token(
    tenant: str = "hospital-a",
    roles: tuple[str, ...] = ("submitter", "clinician"),
    ttl: int = 600,
    subject: str = "dr-test",
) -> dict[str, str]:
    t = mint_dev_token(SECRET, "sightline-dev", "sightline", tenant, list(roles), ttl, subject=subject)
    return {"Authorization": f"Bearer {t}"}


class Harness:
    def __init__(
        self, client: TestClient, preprocess: FakePreprocess, explain: FakeExplain, store: Any
    ) -> None:
        self.client, self.preprocess, self.explain, self.store = client, preprocess, explain, store

    def submit(
        self, data: bytes | None = None, headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return self.client.post(
            "/v1/studies",
            content=data if data is not None else phi_dicom(),
            params=params,
            headers={"Content-Type": "application/dicom", **token(), **(headers or {})},
        )


def app_on_fakes(
    s: GatewaySettings,
    explain: Callable[[Any], FakeExplain] | None = None,
    ready: dict[str, Any] | None = None,
    senders: dict[str, Any] | None = None,
) -> tuple[FastAPI, Any, FakePreprocess, FakeExplain]:
    """The gateway app with the real deid in process (ASGI) and fake preprocess/explain.

    ``explain``: the fake explain's class (given the store); ``ready``: extra readiness checks by
    name; ``senders``: PACS senders by kind. Returns the app, its store and the two fakes.
    """
    from sightline_common.storage import LocalDirStore

    store = LocalDirStore(s.storage_dir)
    pre, exp = FakePreprocess(), (explain or FakeExplain)(store)
    deid_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=deid_app()), base_url="http://deid")

    async def ok() -> bool:
        return True

    deps = Dependencies(
        deid=HttpDeid(deid_client, "http://deid", 10),
        preprocess=pre,
        explain=exp,
        store=store,
        senders=senders,
        ready_checks={"fake": ok, **(ready or {})},
    )
    return create_app(s, deps), store, pre, exp


@contextmanager
def harness(
    tmp: Path, database_url: str | None = None, ready: dict[str, Any] | None = None, **overrides: Any
) -> Iterator[Harness]:
    """A gateway on fakes; ``ready``: extra readiness checks by name (``preprocess``, ``explain``...)."""
    app, store, pre, exp = app_on_fakes(settings(tmp, database_url, **overrides), ready=ready)
    if os.environ.get("SIGHTLINE_TEST_TRACEBACKS"):
        import traceback

        @app.exception_handler(Exception)
        async def _show(request: Any, exc: Exception) -> Any:
            traceback.print_exception(exc)
            raise exc

    with TestClient(app, raise_server_exceptions=False) as client:
        yield Harness(client, pre, exp, store)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def jobs_and_results(tmp: Path) -> tuple[list[Job], int]:
    """The jobs and the number of results in a harness's database (``tmp / "gw.db"``), read
    afresh (as another replica would see them)."""

    async def read() -> tuple[list[Job], int]:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp / 'gw.db'}")
        try:
            async with make_sessions(engine)() as session:
                jobs = list((await session.scalars(select(Job))).all())
                results = int(await session.scalar(select(func.count()).select_from(Result)) or 0)
            return jobs, results
        finally:
            await engine.dispose()

    return asyncio.run(read())
