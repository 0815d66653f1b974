"""OpenTelemetry set-up shared by every service.

Exporters by setting: OTLP over gRPC or HTTP to a collector (cluster), or a JSON-lines file
(the embedded default, one span per line, appended by every local service).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from sightline_common.sampling import ErrorKeepingSpanProcessor, build_sampler
from sightline_common.settings import TelemetrySettings

log = logging.getLogger(__name__)


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """A flat, stable JSON form of a finished span."""
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class JsonLinesSpanExporter(SpanExporter):
    """Append finished spans to a file, one JSON object per line (safe across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_to_dict(s), default=str) + "\n" for s in spans).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:  # nothing held open
        return None


def _exporter(settings: TelemetrySettings) -> SpanExporter | None:
    if settings.exporter == "none":
        return None
    if settings.exporter == "jsonl":
        return JsonLinesSpanExporter(settings.traces_file)
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(endpoint=settings.otlp_endpoint, insecure=True) if settings.otlp_endpoint else Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(endpoint=settings.otlp_endpoint) if settings.otlp_endpoint else Http()


def setup_tracing(
    service_name: str, settings: TelemetrySettings, *, synchronous: bool = False
) -> TracerProvider:
    """Install a global tracer provider for this process and return it.

    ``synchronous`` exports each span as it ends (tests, short-lived commands). Sampling (probes
    never, parent-based ``sample_ratio``, errors kept) is described in :mod:`sightline_common.sampling`.
    """
    resource = Resource.create(
        {"service.name": service_name, "service.namespace": "sightline", "service.version": "0.1.0"}
    )
    sampler = build_sampler(settings.sample_ratio, keep_errors=settings.keep_errors)
    provider = TracerProvider(resource=resource, sampler=sampler)
    exporter = _exporter(settings)
    if exporter is not None:
        exporter = ScrubbingSpanExporter(exporter)
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter) if synchronous else BatchSpanProcessor(
            exporter, schedule_delay_millis=500
        )
        provider.add_span_processor(ErrorKeepingSpanProcessor(processor))
    trace.set_tracer_provider(provider)
    return provider


#: Attributes whose value is a URL or target: the query string is cut (callers may put anything there).
URL_ATTRIBUTES = frozenset({"http.url", "http.target", "url.full", "http.request.uri"})
#: Attributes never exported: raw query strings, and exception messages (they may quote input values)
#: and so stack traces too (a formatted traceback ends with its message; chained ones hold several).
DROPPED_ATTRIBUTES = frozenset({"url.query", "exception.message", "exception.stacktrace"})


def scrub_attributes(attributes: Any) -> dict[str, Any]:
    """Span or event attributes without query strings or exception messages (PHI defence in depth)."""
    out: dict[str, Any] = {}
    for key, value in dict(attributes or {}).items():
        if key in DROPPED_ATTRIBUTES:
            continue
        if key in URL_ATTRIBUTES and isinstance(value, str):
            value = value.split("?", 1)[0].split("#", 1)[0]
        out[key] = value
    return out


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with :func:`scrub_attributes` applied to it and its events: a copy when that
    changes anything, else the span itself (most spans, database calls among them, carry no URL
    or exception: copying each one cost the gateway about 5% of its CPU)."""
    from opentelemetry.sdk.trace import Event

    attributes = scrub_attributes(span.attributes)
    events = [(e, scrub_attributes(e.attributes)) for e in span.events]
    if attributes == dict(span.attributes or {}) and all(a == dict(e.attributes or {}) for e, a in events):
        return span
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=[Event(e.name, a, e.timestamp) for e, a in events],
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Wrap an exporter so that no span leaves the process with a query string or exception message.

    Instrumentations record ``http.target``/``http.url`` with the query string; a caller that puts
    patient data in a query parameter must not see it in the tracing backend. The collector's
    allow-list (infra/otel-collector) is the second line; this is the first, for every exporter.
    """

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def current_trace_id() -> str | None:
    """The active trace id as 32 hex digits, or None outside a span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Add W3C ``traceparent``/``tracestate`` for the active span to outgoing headers."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier
