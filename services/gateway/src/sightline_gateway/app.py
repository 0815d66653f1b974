"""Builds the gateway application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sightline_common.drift import DriftMonitor
from sightline_common.errors import DependencyUnavailable
from sightline_common.storage import ObjectStore, S3Store
from sightline_common.telemetry import current_trace_id
from sightline_common.web import PROBLEM_JSON, service_app

from sightline_gateway.api.deps import Gateway
from sightline_gateway.api.review import install_review
from sightline_gateway.api.routes import dicomweb, router
from sightline_gateway.clients.health import http_ready
from sightline_gateway.clients.pacs import CStoreSender, PacsSender, StowRsSender
from sightline_gateway.clients.retry import RetryPolicy
from sightline_gateway.clients.services import (
    Deid,
    Explain,
    GrpcPreprocess,
    HttpDeid,
    HttpExplain,
    Preprocess,
)
from sightline_gateway.core.auth import TokenVerifier
from sightline_gateway.core.circuits import Circuits
from sightline_gateway.core.envelope import TenantKeys
from sightline_gateway.core.limits import RateLimiter, UrlSigner, limiter_storage
from sightline_gateway.core.monitoring import run_outcome_metrics
from sightline_gateway.core.promotion import GateTargets
from sightline_gateway.core.versions import VersionPlanner, VersionPolicy
from sightline_gateway.db.audit import AuditLog
from sightline_gateway.db.engine import UNREACHABLE, make_engine, make_sessions, prepare_schema
from sightline_gateway.db.lifecycle import Lifecycle
from sightline_gateway.db.migrations import SchemaMismatch
from sightline_gateway.pipeline import Pipeline
from sightline_gateway.server import AnswerCutRequests
from sightline_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

#: Dependencies whose outage queues work instead of making the gateway not ready.
NON_GATING = ("preprocess", "explain")
#: Seconds a client is asked to wait before retrying while the database is unreachable.
RETRY_AFTER_S = 5

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "instance": {"type": "string"},
    },
}


@dataclass
class Dependencies:
    """Outbound clients; tests pass fakes, ``None`` builds the real ones from settings."""

    deid: Deid | None = None
    preprocess: Preprocess | None = None
    explain: Explain | None = None
    store: ObjectStore | None = None
    #: PACS senders by kind (``stow-rs``, ``c-store``); None: the real ones.
    senders: dict[str, PacsSender] | None = None
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] | None = None


def _instrument() -> None:
    """Propagate traceparent through httpx and gRPC, and trace SQL (statements only, no values)."""
    with contextlib.suppress(Exception):
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient

        GrpcAioInstrumentorClient().instrument()


def _tenant_keys(settings: GatewaySettings) -> TenantKeys | None:
    """The tenant keys of re-identification records; every tenant with a PACS must have one."""
    if settings.reidentification_keys_file is None:
        return None
    keys = TenantKeys.load(settings.reidentification_keys_file)
    missing = sorted(t for t in settings.pacs_destinations if not keys.holds(t))
    if missing:
        raise ValueError(f"reidentification_keys_file has no key for tenants with a PACS: {missing}")
    return keys


def create_app(settings: GatewaySettings, deps: Dependencies | None = None) -> FastAPI:
    """The gateway: REST API, durable job worker and retention in one process.

    Ready while the database, the object store and deid answer: what intake needs. Preprocess (and
    so Triton) and explain only degrade it: their jobs wait (see ``core.circuits``).
    """
    deps = deps or Dependencies()
    _instrument()
    http = httpx.AsyncClient()
    with contextlib.suppress(Exception):
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(http)
    engine = make_engine(settings.database_url, settings.database_schema)
    with contextlib.suppress(Exception):
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(
            engine=engine.sync_engine, enable_commenter=False, skip_dep_check=True
        )
    sessions = make_sessions(engine)
    store = deps.store or settings.object_store()
    preprocess = deps.preprocess
    owned_grpc: GrpcPreprocess | None = None
    audit = AuditLog(sessions, store)
    verifier = TokenVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        hs256_secret=settings.jwt_secret,
        jwks_url=settings.jwks_url,
        public_keys=settings.jwt_public_keys,
        leeway_s=settings.jwt_leeway_s,
    )

    async def database() -> bool:
        from sqlalchemy import text

        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def storage() -> bool:
        return await asyncio.to_thread(store.ready)

    checks: dict[str, Callable[[], Awaitable[bool]]] = {"database": database, "storage": storage}
    if deps.ready_checks is not None:
        checks.update(deps.ready_checks)
    else:
        checks.update(
            {
                "deid": lambda: http_ready(http, settings.deid_url),
                "preprocess": lambda: http_ready(http, settings.preprocess_http),
                "explain": lambda: http_ready(http, settings.explain_url),
            }
        )
    # Readiness does not cascade: without preprocess or explain the gateway still accepts and
    # queues studies; their circuits hold the jobs, and /health/ready reports them as degraded.
    probes = {name: checks.pop(name) for name in NON_GATING if name in checks}
    circuits = Circuits(probes, cooldown_s=settings.job_backoff_s)
    tenant_keys = _tenant_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal owned_grpc
        try:
            await prepare_schema(engine, settings.database_schema, settings.migrate_on_start)
        except SchemaMismatch as exc:
            log.critical("refusing to start: %s", exc)
            raise
        if isinstance(store, S3Store):
            await asyncio.to_thread(store.ensure_bucket)
        if preprocess is None:
            owned_grpc = GrpcPreprocess(settings.preprocess_grpc, settings.preprocess_timeout_s)
        lifecycle = Lifecycle(
            sessions,
            audit,
            settings.model_repository,
            GateTargets(
                ece_max=settings.lifecycle_gates.ece_max,
                out_of_scope_tolerance=settings.lifecycle_gates.out_of_scope_tolerance,
                shadow_disagreement_max=settings.lifecycle_gates.shadow_disagreement_max,
                shadow_min_studies=settings.lifecycle_gates.shadow_min_studies,
            ),
            timedelta(days=settings.lifecycle_gates.shadow_window_days),
        )
        pipeline = Pipeline(
            sessions=sessions,
            store=store,
            audit=audit,
            deid=deps.deid or HttpDeid(http, settings.deid_url, settings.deid_timeout_s),
            preprocess=preprocess or owned_grpc,  # type: ignore[arg-type]
            explain=deps.explain or HttpExplain(http, settings.explain_url, settings.explain_timeout_s),
            model_repository=settings.model_repository,
            models=settings.models,
            models_enabled=settings.models_enabled,
            retry_budget_s=settings.job_retry_budget_s,
            backoff_s=settings.job_backoff_s,
            backoff_max_s=settings.job_backoff_max_s,
            deid_retry_budget_s=settings.deid_retry_budget_s,
            lease_s=settings.job_lease_s,
            poll_s=settings.job_poll_s,
            drift=DriftMonitor(observations_file=settings.drift_observations_file),
            circuits=circuits,
            reidentification_k=settings.reidentification_k,
            destinations=settings.pacs_destinations,
            tenant_keys=tenant_keys,
            senders=deps.senders or {"stow-rs": StowRsSender(http), "c-store": CStoreSender()},
            delivery_policy=RetryPolicy(
                budget_s=settings.delivery_retry_budget_s,
                first_s=settings.delivery_backoff_s,
                cap_s=settings.delivery_backoff_max_s,
            ),
            delivery_lease_s=settings.delivery_lease_s,
            lifecycle=lifecycle,
            versions=VersionPlanner(
                {
                    tenant: {model: VersionPolicy(**p.model_dump()) for model, p in by_model.items()}
                    for tenant, by_model in settings.model_versions.items()
                },
                settings.version_assignment_key,
            ),
            # A replica that runs no worker runs no job (an API-only deployment).
            sync_direct_jobs=settings.sync_direct_jobs if settings.worker_concurrency else 0,
        )
        app.state.gateway = Gateway(
            settings=settings,
            sessions=sessions,
            store=store,
            audit=audit,
            pipeline=pipeline,
            verifier=verifier,
            limiter=RateLimiter(
                settings.rate_limit_per_minute,
                settings.rate_limit_burst,
                limiter_storage(settings.rate_limit_storage),
            ),
            signer=UrlSigner(settings.jwt_secret),
            lifecycle=lifecycle,
        )
        stop = asyncio.Event()
        app.state.stopping = stop
        loop = asyncio.get_running_loop()
        shutdown_started: list[float] = []

        def begin_shutdown() -> None:
            """Stop claiming jobs and answer waiting synchronous requests; the grace period runs
            from the first call (the server's SIGTERM, before it drains connections)."""
            if not shutdown_started:
                shutdown_started.append(time.monotonic())
            stop.set()
            pipeline.stop_workers()

        # Called by GatewayServer from its signal handler: hand it to the event loop.
        app.state.begin_shutdown = lambda: loop.call_soon_threadsafe(begin_shutdown)
        if pipeline.forwarder is not None and settings.delivery_concurrency > 0:
            await asyncio.to_thread(pipeline.forwarder.load_builders)
        tasks = [asyncio.create_task(pipeline.run_worker(stop)) for _ in range(settings.worker_concurrency)]
        tasks.append(asyncio.create_task(pipeline.run_backlog_metrics(stop)))
        for _ in range(settings.delivery_concurrency):
            tasks.append(asyncio.create_task(pipeline.run_forwarder(stop)))
        tasks.append(asyncio.create_task(pipeline.run_circuits(stop, settings.dependency_probe_s)))
        tasks.append(
            asyncio.create_task(
                run_outcome_metrics(
                    sessions,
                    lambda: pipeline.router.served_manifests().values(),
                    stop,
                    window=timedelta(days=settings.outcome_window_days),
                    expect_after=timedelta(days=settings.outcome_expected_days),
                    interval_s=settings.outcome_metrics_interval_s,
                )
            )
        )
        tasks.append(
            asyncio.create_task(pipeline.risk.run(stop, settings.reidentification_metrics_interval_s))
        )
        tasks.append(
            asyncio.create_task(
                pipeline.run_retention(
                    stop, timedelta(days=settings.retention_days), settings.retention_interval_s
                )
            )
        )
        if audit.anchors is not None:
            tasks.append(asyncio.create_task(audit.anchors.run(stop, settings.audit_anchor_interval_s)))
        log.info("gateway started: %d workers, store %s", settings.worker_concurrency, type(store).__name__)
        try:
            yield
        finally:
            # Graceful shutdown: stop claiming, let jobs in hand finish within the grace period,
            # then cancel the rest (their leases are handed back).
            begin_shutdown()
            workers = tasks[: settings.worker_concurrency] + pipeline.direct.running()
            for task in tasks[settings.worker_concurrency :]:
                task.cancel()
            if workers:
                left = settings.shutdown_grace_s - (time.monotonic() - shutdown_started[0])
                await asyncio.wait(workers, timeout=max(0.0, left))
            for task in workers:
                task.cancel()
            await asyncio.gather(*tasks, *workers, return_exceptions=True)
            if owned_grpc is not None:
                await owned_grpc.close()
            await http.aclose()
            await engine.dispose()

    app = service_app(
        "gateway",
        title="Sightline API",
        ready_checks=checks,
        dependencies=circuits.status,
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(dicomweb.router)
    install_review(app)

    async def _database_unreachable(request: Request, exc: Exception) -> Response:
        """The database is down: 503 with Retry-After, so that clients retry (same key) later."""
        log.warning("database unreachable on %s: %s", request.url.path, type(exc).__name__)
        error = DependencyUnavailable("the database is unreachable; retry later", retry_after=RETRY_AFTER_S)
        return JSONResponse(
            error.problem(instance=request.url.path),
            status_code=error.status,
            media_type=PROBLEM_JSON,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    for unreachable in UNREACHABLE:
        app.add_exception_handler(unreachable, _database_unreachable)

    @app.middleware("http")
    async def _trace_header(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        trace_id = current_trace_id()
        if trace_id:
            response.headers["X-Trace-Id"] = trace_id
        return response

    def _stopping() -> bool:
        stopping = getattr(app.state, "stopping", None)
        return stopping is not None and stopping.is_set()

    app.add_middleware(AnswerCutRequests, stopping=_stopping)  # outermost: added last

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                routes=app.routes,
                description="Sightline: assistive medical-image analysis. Results are "
                "preliminary until a clinician reviews them.",
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
