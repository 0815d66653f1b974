"""A study's stages after intake: preprocess + Triton, explain, and the stored result.

A job resumes after its last checkpoint, so a stage that finished is not run again.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

from opentelemetry import trace
from sightline_common.contracts import ExplainRequest
from sightline_common.drift import DriftMonitor
from sightline_common.errors import DependencyUnavailable, SightlineError
from sightline_common.manifest import ModelManifest
from sightline_common.metrics import STAGE_DURATION
from sightline_common.storage import ObjectStore
from sightline_common.telemetry import current_trace_id

from sightline_gateway.clients.retry import RetryPolicy, call_with_retry
from sightline_gateway.clients.services import Explain, Inference, Preprocess
from sightline_gateway.core.forwarder import Forwarder
from sightline_gateway.core.manifests import ManifestCache
from sightline_gateway.core.objects import explain_prefix
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.models import Job, Result, Study, utcnow

tracer = trace.get_tracer(__name__)

EXPLAIN_ATTEMPTS = 2
PENDING = "pending"


def explain_request(study: Study, manifest: ModelManifest, top: dict[str, Any]) -> ExplainRequest:
    """What explain is asked for a study: Grad-CAM of its top-scoring instance."""
    return ExplainRequest(
        object_key=top["key"],
        output_prefix=explain_prefix(study.id),
        model_name=manifest.name,
        model_version=int(top["model_version"] or manifest.version),
        target=1,
    )


def out_of_scope_entry(manifest: ModelManifest, score: float | None) -> dict[str, Any] | None:
    """An instance's ``out_of_scope`` field: the score, the manifest's threshold, and the flag.

    None when the model has no out-of-scope score or preprocess sent none (the result then says
    nothing about scope rather than something untested).
    """
    spec = manifest.out_of_scope
    if spec is None or score is None:
        return None
    return {"score": round(float(score), 4), "threshold": spec.threshold, "flagged": spec.flagged(score)}


def study_model(study: Study | None) -> str | None:
    """The model a study was routed to at intake; ``None`` for a study stored before routing."""
    models = (study.models if study is not None else None) or []
    return str(models[0]) if models else None


class Workflow:
    """Runs a claimed job's remaining stages and stores the result."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        queue: JobQueue,
        preprocess: Preprocess,
        explain: Explain,
        manifests: ManifestCache,
        default_model: str,
        policy: RetryPolicy,
        drift: DriftMonitor | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.store, self.queue, self.preprocess, self.explain = store, queue, preprocess, explain
        self.manifests, self.default_model = manifests, default_model
        self.policy = policy
        self.drift = drift
        self.forwarder = forwarder
        self._drift_registered: set[tuple[str, int]] = set()

    def manifest(self, study: Study | None = None) -> ModelManifest:
        """The manifest of the model ``study`` was routed to (the default model's without one)."""
        return self.manifests.get(study_model(study) or self.default_model)

    async def run(self, job: Job, study: Study) -> None:
        """Run the stages; errors reach the worker, which retries or fails the job."""
        state = dict(job.state or {})
        timings = dict(study.stage_timings or {})
        manifest = self.manifest(study)
        if "inferences" not in state:
            start = time.perf_counter()
            inferences = []
            for key in study.instance_keys:
                data = await asyncio.to_thread(self.store.get, key)
                with tracer.start_as_current_span("gateway.preprocess"):
                    inf: Inference = await self.preprocess.infer(data, manifest.name)
                inferences.append({"key": key, **inf.__dict__})
            timings["preprocess_ms"] = round((time.perf_counter() - start) * 1000, 2)
            STAGE_DURATION.labels("gateway", "preprocess").observe(time.perf_counter() - start)
            state["inferences"] = inferences
            if study.explain:
                # Checkpoint only before another remote stage; the result's commit follows at once.
                await self.queue.checkpoint(job, study, state, timings, "explain")
        inferences = state["inferences"]
        top = max(inferences, key=lambda i: i["probability"])
        if study.explain and "explanation" not in state:
            start = time.perf_counter()
            state["explanation"] = await self._explain(job, study, manifest, top)
            timings["explain_ms"] = round((time.perf_counter() - start) * 1000, 2)
            STAGE_DURATION.labels("gateway", "explain").observe(time.perf_counter() - start)
        await self._store_result(job, study, manifest, inferences, top, state.get("explanation"), timings)

    async def _explain(
        self, job: Job, study: Study, manifest: ModelManifest, top: dict[str, Any]
    ) -> dict[str, Any]:
        """Grad-CAM for the top instance; never a failed study.

        Explain down: the result is delivered at once with the explanation ``pending``, and a
        backfill (``core.backfill``) adds it when explain is back. Explain refused the
        instance: ``unavailable`` with the reason.
        """
        request = explain_request(study, manifest, top)
        try:
            with tracer.start_as_current_span("gateway.explain"):
                explained = await call_with_retry(
                    functools.partial(self.explain.explain, request),
                    attempts=EXPLAIN_ATTEMPTS,
                    backoff_s=self.policy.first_s,
                    stage="explain",
                )
        except DependencyUnavailable:
            return {"status": PENDING, "reason": "explanation service unavailable; added when it is back"}
        except SightlineError as exc:
            # The probability stands without a heatmap; say so rather than fail the study.
            return {"status": "unavailable", "reason": exc.detail[:200]}
        return {"status": "available", **explained.model_dump()}

    async def _store_result(
        self,
        job: Job,
        study: Study,
        manifest: ModelManifest,
        inferences: list[dict[str, Any]],
        top: dict[str, Any],
        explanation: dict[str, Any] | None,
        timings: dict[str, Any],
    ) -> None:
        version = int(top["model_version"] or manifest.version)
        probability = float(top["probability"])
        timings = dict(timings)
        timings["total_ms"] = round((utcnow() - study.created_at).total_seconds() * 1000, 2)
        result = Result(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            model_name=manifest.name,
            model_version=version,
            model_sha256=manifest.artifacts.get(f"{version}/model.onnx", ""),
            placeholder=manifest.placeholder or any(i["placeholder"] for i in inferences),
            probability=probability,
            threshold=manifest.threshold,
            refer=manifest.decision(probability),
            instances=[
                {
                    "index": n,
                    "probability": i["probability"],
                    "logit": i["logit"],
                    "image_stats": i["image_stats"],
                    **({"out_of_scope": oos} if oos is not None else {}),
                }
                for n, i in enumerate(inferences)
                for oos in [out_of_scope_entry(manifest, i.get("out_of_scope_score"))]
            ],
            explanation=explanation,
            status="preliminary",
            trace_id=current_trace_id() or study.trace_id,
        )
        pending = explanation is not None and explanation.get("status") == PENDING
        backfill = (
            {"explain_request": explain_request(study, manifest, top).model_dump()} if pending else None
        )
        flags = [i["out_of_scope"]["flagged"] for i in result.instances if "out_of_scope" in i]
        out_of_scope = any(flags) if flags else None
        # The result's way back to the tenant's PACS is durable from the commit that stores it.
        delivery = self.forwarder.delivery_for(study) if self.forwarder is not None else None
        if await self.queue.complete(job, study, result, timings, backfill=backfill, delivery=delivery):
            self._observe_drift(manifest, version, top, result.refer, study.tenant_id, out_of_scope)

    def _observe_drift(
        self,
        manifest: ModelManifest,
        version: int,
        top: dict[str, Any],
        refer: bool,
        segment: str,
        out_of_scope: bool | None = None,
    ) -> None:
        """Feed the drift monitor: image statistics, calibrated score, decision and out-of-scope
        flag (any instance flagged), per tenant (site)."""
        if self.drift is None:
            return
        if (manifest.name, manifest.version) not in self._drift_registered:
            self.drift.register(manifest)
            self._drift_registered.add((manifest.name, manifest.version))
        self.drift.observe(
            manifest.name,
            version,
            stats=top["image_stats"],
            score=float(top["probability"]),
            decision=refer,
            segment=segment,
            out_of_scope=out_of_scope,
        )
