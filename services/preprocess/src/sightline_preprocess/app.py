"""Builds the transformer and its KServe ModelServer, with Sightline's health routes."""

from __future__ import annotations

from typing import Any

from sightline_common.health import health_router
from sightline_common.manifest import load_manifest

from sightline_preprocess.clients.triton import TritonClient
from sightline_preprocess.model import DicomTransformer
from sightline_preprocess.settings import PreprocessSettings


def create_transformer(settings: PreprocessSettings) -> DicomTransformer:
    manifest = load_manifest(settings.model_repository, settings.model_name)
    triton = TritonClient(settings.triton_grpc, settings.triton_timeout_s)
    return DicomTransformer(manifest, triton, settings.max_dicom_bytes)


def create_app(settings: PreprocessSettings) -> tuple[Any, DicomTransformer]:
    """KServe's FastAPI app with /health/live and /health/ready added, and the transformer.

    KServe serves /metrics from the default Prometheus registry, which holds ours too.
    """
    from kserve.model_server import app

    transformer = create_transformer(settings)

    async def triton_and_contract() -> bool:
        return await transformer.healthy()

    app.include_router(health_router({"triton-model": triton_and_contract}))
    return app, transformer
