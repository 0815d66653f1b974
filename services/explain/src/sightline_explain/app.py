"""The explanation service as a Ray Serve application with a FastAPI ingress.

``POST /v1/explain`` takes an :class:`ExplainRequest` (JSON, the gateway's contract) or the
DICOM bytes themselves (``application/dicom`` with query parameters), and answers an
:class:`ExplainResponse`. The CAM computation of concurrent requests is batched with
``@serve.batch``; decoding, rendering and storage run per request in worker threads.
"""

# No ``from __future__ import annotations`` here: Serve cloudpickles the deployment class, and
# FastAPI must see real (not string) annotations on the routes after unpickling in the replica.
import asyncio
import logging
import time
from typing import Any, cast

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from ray import serve
from ray.serve import Application, Deployment
from sightline_common import metrics as common_metrics
from sightline_common.contracts import ExplainRequest, ExplainResponse
from sightline_common.errors import UnsupportedMediaType
from sightline_common.http import media_type, read_body
from sightline_common.model_repository import served_models
from sightline_common.web import service_app

from sightline_explain import metrics as explain_metrics
from sightline_explain.core.engine import EngineSet, ExplanationEngine, PreparedImage, generated_prefix
from sightline_explain.settings import ExplainSettings

log = logging.getLogger(__name__)
SERVICE = "explain"


class _Replica:
    """The engines of the replica in this process (Serve runs each replica in its own actor).

    Module-level on purpose: Serve pickles the ingress app separately from the deployment
    class, so a closure shared by both would be copied; a module attribute is not.
    """

    engines: EngineSet | None = None


def create_app(settings: ExplainSettings) -> FastAPI:
    """The FastAPI ingress; ready once this replica has loaded the models and storage answers."""

    async def model_loaded() -> bool:
        return _Replica.engines is not None

    async def storage() -> bool:
        engines = _Replica.engines
        return engines is not None and await asyncio.to_thread(engines.store.ready)

    return service_app(
        SERVICE,
        title="Sightline explanation service",
        ready_checks={"model": model_loaded, "storage": storage},
    )


def build_deployment(settings: ExplainSettings) -> Application:
    """The bound Ray Serve application (deployment and batching options come from settings)."""
    app = create_app(settings)

    @serve.deployment(
        name="explain",
        num_replicas=settings.replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": settings.num_cpus_per_replica,
            "num_gpus": settings.num_gpus_per_replica,
        },
    )
    @serve.ingress(app)
    class Explainer:
        def __init__(self, settings: ExplainSettings) -> None:
            import torch
            from sightline_common.logging import configure_logging
            from sightline_common.telemetry import setup_tracing

            configure_logging(SERVICE, json_output=settings.log_json, level=settings.log_level)
            setup_tracing(SERVICE, settings.telemetry)
            torch.set_num_threads(settings.torch_threads)
            self.settings = settings
            names = served_models(settings.model_repository, settings.models)
            self.engines = EngineSet.load(
                settings.model_repository, names, settings.object_store(), settings.method
            )
            for engine in self.engines.engines.values():
                if settings.num_gpus_per_replica > 0 and torch.cuda.is_available():
                    engine.model.to("cuda")
                log.info(
                    "explain loaded %s v%d (%s)", engine.manifest.name, engine.manifest.version, engine.method
                )
            _Replica.engines = self.engines

        @app.post("/v1/explain", response_model=ExplainResponse)
        async def explain(
            self,
            request: Request,
            model_name: str | None = Query(default=None, description="with application/dicom only"),
            model_version: int | None = Query(default=None, ge=1, description="with application/dicom only"),
            target: int = Query(default=1, ge=0, le=1, description="with application/dicom only"),
        ) -> ExplainResponse:
            started = time.perf_counter()
            media = media_type(request)
            body = await read_body(request, self.settings.max_request_bytes)
            version: int | None
            key: str | None
            if media == "application/json":
                try:
                    req = ExplainRequest.model_validate_json(body)
                except ValidationError as exc:
                    raise RequestValidationError(exc.errors(include_input=False)) from None
                name, version, key = req.model_name, req.model_version, req.object_key
                prefix, target = req.output_prefix, req.target
            elif media == "application/dicom":
                if model_name is None:
                    raise RequestValidationError([{"loc": ("query", "model_name"), "msg": "Field required"}])
                name, version, key, prefix = model_name, model_version, None, generated_prefix()
            else:
                raise UnsupportedMediaType(
                    "send application/json (ExplainRequest) or application/dicom", reason="media-type"
                )

            def load() -> tuple[ExplanationEngine, PreparedImage]:
                # Off the event loop, in one hop: another version's checkpoint is loaded on its
                # first request; reading and decoding the image take a few milliseconds.
                engine = self.engines.get(name, version)
                return engine, engine.prepare(body if key is None else engine.load_object(key))

            engine, image = await asyncio.to_thread(load)
            heat, logit = await self._cam((self.engines.engine_key(engine), image, target))
            return await asyncio.to_thread(engine.publish, image, heat, logit, target, prefix, started)

        @serve.batch(
            max_batch_size=settings.max_batch_size, batch_wait_timeout_s=settings.batch_wait_timeout_s
        )
        async def _cam(self, jobs: list[tuple[str, PreparedImage, int]]) -> list[tuple[Any, float]]:
            # Metrics through their modules: a global referenced from this nested class would be
            # pickled by value (an unregistered copy); a module is pickled by reference.
            explain_metrics.BATCH_SIZE.observe(len(jobs))
            start = time.perf_counter()
            out = await asyncio.to_thread(self.engines.compute, jobs)
            common_metrics.STAGE_DURATION.labels(SERVICE, "gradcam").observe(time.perf_counter() - start)
            return out

    return cast(Deployment, Explainer).bind(settings)  # @serve.deployment made the class a Deployment
