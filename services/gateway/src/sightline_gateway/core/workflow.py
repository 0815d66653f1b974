"""A study's stages after intake: preprocess + Triton and explain for each of its models, and the
stored results.

A study routed to several models (``Study.models``, in routing order) is still one job: its
``state["models"]`` holds each model's progress (``inferences``, then ``explanation``), and the
job is checkpointed after every remote call that another follows, so a crash or a retry
resumes with the next model's call and never repeats a finished one. The job's ``stage`` is
``preprocess`` until every model has its inferences, then ``explain`` (the stage names the
dependency the next call needs, which the circuits hold and resume by). The study is done when
one commit stores every model's result (``JobQueue.complete``); (study, model) is unique, so a
worker that lost its lease cannot add a second result for a model.

One job per study rather than one per model keeps intake, the study's status, waiting and
the PACS delivery as they were: the study completes once, with all its results.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Sequence
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
from sightline_gateway.core.shadow import SHADOW_FAILED, VERSION_ASSIGNED, ShadowComparison, observe_shadow
from sightline_gateway.core.versions import StudyVersions, VersionPlanner
from sightline_gateway.db.jobs import JobQueue
from sightline_gateway.db.lifecycle import Lifecycle
from sightline_gateway.db.models import Job, Result, Study, utcnow

tracer = trace.get_tracer(__name__)
log = logging.getLogger(__name__)

EXPLAIN_ATTEMPTS = 2
PENDING = "pending"


def explain_request(
    study: Study, manifest: ModelManifest, top: dict[str, Any], position: int = 0
) -> ExplainRequest:
    """What explain is asked for a study and one of its models: Grad-CAM of its top-scoring
    instance, written under the model's own prefix (the first model's is the study's)."""
    return ExplainRequest(
        object_key=top["key"],
        output_prefix=explain_prefix(study.id, manifest.name if position else None),
        model_name=manifest.name,
        model_version=int(top["model_version"] or manifest.version),
        target=1,
    )


def top_instance(inferences: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The instance a model scored highest: the study's probability for that model."""
    return max(inferences, key=lambda i: i["probability"])


def model_progress(state: dict[str, Any], first_model: str) -> dict[str, dict[str, Any]]:
    """Each model's progress in a job's ``state``, by model name.

    A job checkpointed before studies had several models kept its one model's ``inferences``
    and ``explanation`` at the top of its state: they are the first model's.
    """
    progress = {name: dict(p) for name, p in (state.get("models") or {}).items()}
    if not progress and "inferences" in state:
        legacy = {k: state[k] for k in ("inferences", "explanation") if k in state}
        progress[first_model] = legacy
    return progress


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
    """The first model a study was routed to at intake; ``None`` for a study stored before routing."""
    models = (study.models if study is not None else None) or []
    return str(models[0]) if models else None


class Workflow:
    """Runs a claimed job's remaining stages and stores the results."""

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
        versions: VersionPlanner | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        self.store, self.queue, self.preprocess, self.explain = store, queue, preprocess, explain
        self.versions, self.lifecycle = versions, lifecycle
        self.manifests, self.default_model = manifests, default_model
        self.policy = policy
        self.drift = drift
        self.forwarder = forwarder
        self._drift_registered: set[tuple[str, int]] = set()

    def manifest(self, study: Study | None = None) -> ModelManifest:
        """The manifest of the first model ``study`` was routed to (the default model's without one)."""
        return self.manifests.get(study_model(study) or self.default_model)

    def study_manifests(self, study: Study) -> list[ModelManifest]:
        """The manifests of every model the study was routed to, in routing order."""
        names = [str(m) for m in (study.models or [])] or [self.default_model]
        return [self.manifests.get(name) for name in names]

    async def run(self, job: Job, study: Study) -> None:
        """Run the stages; errors reach the worker, which retries or fails the job."""
        state = dict(job.state or {})
        timings = dict(study.stage_timings or {})
        manifests = self.study_manifests(study)
        progress = model_progress(state, manifests[0].name)
        state.pop("inferences", None)
        state.pop("explanation", None)
        state["models"] = progress
        to_infer = [m for m in manifests if "inferences" not in progress.get(m.name, {})]
        start = time.perf_counter()
        for n, manifest in enumerate(to_infer):
            plan, explicit = await self._plan(study, manifest)
            entry: dict[str, Any] = {
                "versions": plan.as_dict(),
                "inferences": await self._infer(study, manifest, plan.result_version if explicit else None),
            }
            if plan.shadow_version is not None:
                # Kept in the job's state only (never in a result): see _record_shadows.
                entry["shadow"] = await self._shadow(study, manifest, plan.shadow_version)
            progress[manifest.name] = entry
            timings["preprocess_ms"] = round((time.perf_counter() - start) * 1000, 2)
            last = n + 1 == len(to_infer)
            if not last or study.explain:
                # Checkpoint only before another remote call; the results' commit follows at once.
                await self.queue.checkpoint(job, study, state, timings, "explain" if last else "preprocess")
        if to_infer:
            STAGE_DURATION.labels("gateway", "preprocess").observe(time.perf_counter() - start)
        if study.explain:
            to_explain = [(n, m) for n, m in enumerate(manifests) if "explanation" not in progress[m.name]]
            start = time.perf_counter()
            for k, (position, manifest) in enumerate(to_explain):
                top = top_instance(progress[manifest.name]["inferences"])
                explanation = await self._explain(study, manifest, top, position)
                progress[manifest.name]["explanation"] = explanation
                timings["explain_ms"] = round((time.perf_counter() - start) * 1000, 2)
                if k + 1 < len(to_explain):
                    await self.queue.checkpoint(job, study, state, timings, "explain")
            if to_explain:
                STAGE_DURATION.labels("gateway", "explain").observe(time.perf_counter() - start)
        await self._store_results(job, study, manifests, progress, timings)

    async def _plan(self, study: Study, manifest: ModelManifest) -> tuple[StudyVersions, bool]:
        """The versions the study gets from one model, and whether to name the version to
        preprocess (not when no policy or promotion applies: Triton's choice, as before)."""
        promoted = await self.lifecycle.serving_version(manifest.name) if self.lifecycle else manifest.version
        policy = self.versions.policy(study.tenant_id, manifest.name) if self.versions else None
        if self.versions is None:
            plan = StudyVersions(promoted, promoted, False, None)
        else:
            plan = self.versions.plan(study.tenant_id, manifest.name, study.id, promoted)
        arm = "canary" if plan.canary else "serving"
        VERSION_ASSIGNED.labels(manifest.name, str(plan.result_version), arm, study.tenant_id).inc()
        return plan, policy is not None or promoted != manifest.version

    async def _infer(
        self, study: Study, manifest: ModelManifest, version: int | None = None
    ) -> list[dict[str, Any]]:
        """Every instance of the study through preprocess + Triton for one model (``version``:
        the one the study was assigned; None lets Triton choose)."""
        inferences = []
        for key in study.instance_keys:
            data = await asyncio.to_thread(self.store.get, key)
            with tracer.start_as_current_span("gateway.preprocess") as span:
                span.set_attribute("sightline.model", manifest.name)
                if version is not None:
                    span.set_attribute("sightline.model.version", version)
                    inf: Inference = await self.preprocess.infer(data, manifest.name, version)
                else:
                    inf = await self.preprocess.infer(data, manifest.name)
            inferences.append({"key": key, **inf.__dict__})
        return inferences

    async def _shadow(
        self, study: Study, manifest: ModelManifest, version: int
    ) -> list[dict[str, Any]] | None:
        """The candidate's silent inferences; None when they failed (the study goes on without)."""
        try:
            return await self._infer(study, manifest, version)
        except SightlineError as exc:
            SHADOW_FAILED.labels(manifest.name, str(version)).inc()
            log.warning("shadow inference of %s v%d failed: %s", manifest.name, version, exc.code)
            return None

    async def _record_shadows(
        self, study: Study, manifests: list[ModelManifest], progress: dict[str, dict[str, Any]]
    ) -> None:
        """Store and count each candidate's shadow score beside the serving version's result."""
        for manifest in manifests:
            entry = progress[manifest.name]
            shadow, versions = entry.get("shadow"), entry.get("versions") or {}
            if not shadow or versions.get("shadow_version") is None:
                continue
            serving = float(top_instance(entry["inferences"])["probability"])
            cand_top = top_instance(shadow)
            candidate = float(cand_top["probability"])
            comparison = ShadowComparison(
                model=manifest.name,
                tenant=study.tenant_id,
                serving_version=int(versions["serving"]),
                candidate_version=int(versions["shadow_version"]),
                serving_probability=serving,
                candidate_probability=candidate,
                serving_threshold=self.manifests.version(manifest.name, int(versions["serving"])).threshold,
                candidate_threshold=self.manifests.version(
                    manifest.name, int(versions["shadow_version"])
                ).threshold,
            )
            observe_shadow(comparison)
            if self.lifecycle is not None:
                await self.lifecycle.record_shadow(comparison, study.id)
            self._observe_drift(
                manifest,
                int(versions["shadow_version"]),
                cand_top,
                comparison.candidate_refers,
                study.tenant_id,
            )

    async def _explain(
        self, study: Study, manifest: ModelManifest, top: dict[str, Any], position: int
    ) -> dict[str, Any]:
        """Grad-CAM for one model's top instance; never a failed study.

        Explain down: the result is delivered at once with the explanation ``pending``, and a
        backfill (``core.backfill``) adds it when explain is back. Explain refused the
        instance: ``unavailable`` with the reason.
        """
        request = explain_request(study, manifest, top, position)
        try:
            with tracer.start_as_current_span("gateway.explain") as span:
                span.set_attribute("sightline.model", manifest.name)
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

    def _result(
        self,
        study: Study,
        manifest: ModelManifest,
        position: int,
        inferences: list[dict[str, Any]],
        explanation: dict[str, Any] | None,
    ) -> Result:
        """One model's result row for the study."""
        top = top_instance(inferences)
        version = int(top["model_version"] or manifest.version)
        probability = float(top["probability"])
        if version != manifest.version:  # a canary's (or a promoted) version: its own threshold and digest
            manifest = self.manifests.version(manifest.name, version)
        return Result(
            id=str(uuid.uuid4()),
            study_id=study.id,
            tenant_id=study.tenant_id,
            model_name=manifest.name,
            position=position,
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

    async def _store_results(
        self,
        job: Job,
        study: Study,
        manifests: list[ModelManifest],
        progress: dict[str, dict[str, Any]],
        timings: dict[str, Any],
    ) -> None:
        timings = dict(timings)
        timings["total_ms"] = round((utcnow() - study.created_at).total_seconds() * 1000, 2)
        results, pending = [], []
        for position, manifest in enumerate(manifests):
            inferences = progress[manifest.name]["inferences"]
            explanation = progress[manifest.name].get("explanation")
            results.append(self._result(study, manifest, position, inferences, explanation))
            if explanation is not None and explanation.get("status") == PENDING:
                request = explain_request(study, manifest, top_instance(inferences), position)
                pending.append(request.model_dump())
        backfill = {"explain_requests": pending} if pending else None
        # The results' way back to the tenant's PACS is durable from the commit that stores them.
        delivery = self.forwarder.delivery_for(study) if self.forwarder is not None else None
        if await self.queue.complete(job, study, results, timings, backfill=backfill, delivery=delivery):
            for manifest, result in zip(manifests, results, strict=True):
                top = top_instance(progress[manifest.name]["inferences"])
                flags = [i["out_of_scope"]["flagged"] for i in result.instances if "out_of_scope" in i]
                out_of_scope = any(flags) if flags else None
                self._observe_drift(
                    manifest, result.model_version, top, result.refer, study.tenant_id, out_of_scope
                )
            await self._record_shadows(study, manifests, progress)

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
