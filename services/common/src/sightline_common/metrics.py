"""Prometheus metrics common to every HTTP service.

Names follow Prometheus conventions (base units, ``_total`` counters, ``_seconds``
histograms). Labels carry route templates and status codes, never ids or patient data. Latency
observations made inside a sampled span carry its trace id as an exemplar, shown to scrapers that
ask for OpenMetrics (Prometheus with ``--enable-feature=exemplar-storage``): a slow bucket links
to a trace.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from types import ModuleType

from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics


def trace_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` of the active span when it is sampled (exported), else None."""
    ctx = trace.get_current_span().get_span_context()
    if not (ctx.is_valid and ctx.trace_flags.sampled):
        return None
    return {"trace_id": format(ctx.trace_id, "032x")}


class TracedHistogram(Histogram):
    """A histogram whose observations carry the active sampled trace as exemplar (when none is given)."""

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        super().observe(amount, exemplar if exemplar is not None else trace_exemplar())


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUEST_DURATION = TracedHistogram(
    "sightline_http_request_duration_seconds",
    "HTTP request latency by service, method, route template and status code.",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "sightline_http_requests_in_flight",
    "HTTP requests being served.",
    ["service"],
)
ERRORS = Counter(
    "sightline_errors_total",
    "Errors returned to callers, by service and error kind.",
    ["service", "kind"],
)
STAGE_DURATION = TracedHistogram(
    "sightline_stage_duration_seconds",
    "Duration of a pipeline stage (deid, preprocess, inference, explain, storage).",
    ["service", "stage"],
    buckets=LATENCY_BUCKETS,
)


def exposition(accept: str) -> Response:
    """The default registry as OpenMetrics (with exemplars) when the scraper accepts it, else text 0.0.4."""
    if "application/openmetrics-text" in accept:
        body = openmetrics.generate_latest(REGISTRY)  # type: ignore[no-untyped-call]
        return Response(body, media_type=openmetrics.CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _registry_module() -> ModuleType:
    """This module, looked up at call time.

    Ray Serve pickles the ingress app's closures by value, globals included: metric objects
    referenced directly would be copied into each replica and never reach ``/metrics``.
    A module is pickled by reference, so the closures reach the real metrics through it.
    """
    return sys.modules[__name__]


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def instrument_app(app: FastAPI, service: str) -> None:
    """Add request metrics and a ``/metrics`` endpoint to ``app``."""

    @app.middleware("http")
    async def _measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path == "/metrics":
            return await call_next(request)
        m = _registry_module()
        in_flight = m.HTTP_IN_FLIGHT.labels(service)
        in_flight.inc()
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            in_flight.dec()
            m.HTTP_REQUEST_DURATION.labels(
                service, request.method, _route_template(request), str(status)
            ).observe(time.perf_counter() - start)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        response: Response = _registry_module().exposition(request.headers.get("accept", ""))
        return response
