"""Builds the transformer, its HTTP app, and the KServe ModelServer that serves both.

KServe's REST server always serves, and adds its routes to, the module-level
``kserve.model_server.app``. Here the app is ours, made per call (so ``create_app`` can be
called twice, and tested, without touching KServe's global): :class:`PreprocessServer` hands it
to KServe's REST server, which adds the v1/v2 data plane, ``/`` and ``/metrics`` to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import kserve.model_server
from fastapi import FastAPI
from kserve import ModelServer
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.rest.server import RESTServer
from sightline_common.health import health_router
from sightline_common.manifest import load_manifest
from sightline_common.model_repository import served_models

from sightline_preprocess.clients.triton import TritonClient
from sightline_preprocess.model import DicomTransformer
from sightline_preprocess.settings import PreprocessSettings


def create_transformers(settings: PreprocessSettings) -> list[DicomTransformer]:
    """One transformer per served model, each preprocessing as its own manifest says (one Triton client)."""
    triton = TritonClient(settings.triton_grpc, settings.triton_timeout_s)
    return [
        DicomTransformer(
            load_manifest(settings.model_repository, name),
            triton,
            settings.max_dicom_bytes,
            repository=settings.model_repository,
        )
        for name in served_models(settings.model_repository, settings.models)
    ]


def create_app(settings: PreprocessSettings, transformers: Sequence[DicomTransformer]) -> FastAPI:
    """A new FastAPI app with /health/live and /health/ready (ready: Triton serves every model,
    each matching its manifest; the check of each is named ``triton-model:<name>``).

    KServe adds its routes when :class:`PreprocessServer` serves it; its ``/metrics`` reads the
    default Prometheus registry, which holds ours too.
    """
    app = FastAPI(title="Sightline preprocess", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health_router({f"triton-model:{t.name}": t.healthy for t in transformers}))
    return app


class _AppRESTServer(RESTServer):  # type: ignore[misc]
    """KServe's REST server serving ``app`` rather than ``kserve.model_server:app``."""

    def __init__(self, app: FastAPI, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app
        self.config.app = app  # uvicorn serves this object instead of importing the string

    def create_application(self) -> None:
        self._add_middlewares(self.app)
        self._register_endpoints(self.app)
        self._add_exception_handlers(self.app)


class PreprocessServer(ModelServer):  # type: ignore[misc]
    """KServe's ModelServer (one worker, v2 REST and gRPC) with the REST data plane on ``app``."""

    def __init__(self, app: FastAPI, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    def start(self, models: list[Any]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = _AppRESTServer(
            self.app,
            "kserve.model_server:app",  # unused: the app object above is served
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve.model_server.args),  # KServe's gRPC message-size options
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())
