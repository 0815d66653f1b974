"""The explanation service as a Ray Serve application with a FastAPI ingress."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from ray import serve

from sightline_common.errors import InvalidInput
from sightline_common.imaging import prepare, read_dicom
from sightline_common.metrics import STAGE_DURATION
from sightline_common.web import service_app
from sightline_explain.core.gradcam import grad_cam
from sightline_explain.core.model import load_served_model
from sightline_explain.settings import ExplainSettings

log = logging.getLogger(__name__)


class _State:
    loaded = False


def create_app(settings: ExplainSettings) -> FastAPI:
    """The FastAPI ingress; readiness reflects whether this replica has loaded the model."""

    async def model_loaded() -> bool:
        return _State.loaded

    return service_app("explain", title="Sightline explanation service", ready_checks={"model": model_loaded})


def build_deployment(settings: ExplainSettings) -> Any:
    """The bound Ray Serve application (deployment options come from settings)."""
    app = create_app(settings)

    @serve.deployment(
        name="explain",
        num_replicas=settings.replicas,
        ray_actor_options={
            "num_cpus": settings.num_cpus_per_replica,
            "num_gpus": settings.num_gpus_per_replica,
        },
    )
    @serve.ingress(app)
    class Explainer:
        def __init__(self, settings: ExplainSettings) -> None:
            from sightline_common.telemetry import setup_tracing

            setup_tracing("explain", settings.telemetry)
            torch.set_num_threads(settings.torch_threads)
            self.settings = settings
            self.manifest, self.model = load_served_model(settings.model_repository, settings.model_name)
            _State.loaded = True
            log.info("explain loaded %s v%s", self.manifest.name, self.manifest.version)

        @app.post("/v1/explain")
        async def explain(self, request: Request, target: int = 1) -> dict[str, Any]:
            if target not in (0, 1):
                raise InvalidInput("target must be 0 (benign) or 1 (malignant)")
            body = await request.body()
            start = time.perf_counter()
            x, _, _ = prepare(read_dicom(body), self.manifest.preprocessing)
            cams, logits = grad_cam(self.model, torch.from_numpy(x)[None], target)
            cam = cams[0].numpy()
            peak = np.unravel_index(int(cam.argmax()), cam.shape)
            STAGE_DURATION.labels("explain", "gradcam").observe(time.perf_counter() - start)
            return {
                "model_name": self.manifest.name,
                "model_version": self.manifest.version,
                "target": target,
                "peak": {"row": int(peak[0]), "col": int(peak[1])},
                "fraction_above_0_5": float((cam >= 0.5).mean()),
            }

    return Explainer.bind(settings)
