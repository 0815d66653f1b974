"""Which spans are kept: parent-based ratio sampling, probes never, errors always (as far as a head can).

Three rules, in this order:

1. Probes are never traced. Readiness checks run with instrumentation suppressed
   (:func:`sightline_common.health.probe_context`); any probe call made elsewhere (a client polling
   another service's ``/health/ready``, a gRPC ``ServerReady``/``ModelReady``) is recognised by its
   name or URL when its span starts and dropped, with a ``tracestate`` mark so that nothing under it
   (here or downstream) is traced either. Only a *root* span is judged by its name: a readiness
   call made inside a real request stays in that request's trace.
2. Parent-based ratio sampling: a root span is sampled with probability ``sample_ratio`` (by trace
   id, so every service agrees); a child follows its parent's decision.
3. Errors are kept. A head sampler decides when a span *starts*, before anyone knows it will fail,
   so it cannot keep whole failed traces: that takes tail sampling (a collector's
   ``tail_sampling`` processor buffering whole traces). What a head can do, and what this does:
   spans a ratio would drop are still *recorded* (not exported), and :class:`ErrorKeepingSpanProcessor`
   exports those that end in error, together with every later-ending span of the same trace in this
   process (its parents: the error's path up to this service's entry span). Such spans carry
   ``sightline.sampling=error-kept``; their ancestors in other services are kept only where those
   services saw the error too (a 5xx answer marks the caller's client and server spans as errors).
   The cost is recording every span at ratios below 1, which is CPU, not export volume.

Database calls that belong to no request or job (a pool's connect, a job queue's poll: the
gateway's worker polls several times a second) are not exported either, unless they fail.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from threading import Lock

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

#: ``tracestate`` member that marks a probe's (dropped) trace, so its children are dropped too.
PROBE_STATE = ("sightline", "probe")
#: URL paths of health and metrics endpoints (any service's, any client's).
PROBE_PATHS = ("/health/ready", "/health/live", "/metrics", "/v2/health/ready", "/v2/health/live")
#: Open Inference Protocol v2 gRPC readiness methods (Triton's, KServe's).
PROBE_RPCS = ("ServerReady", "ServerLive", "ModelReady")
#: Span attributes that hold a request URL or path.
_URL_KEYS = ("url.full", "http.url", "url.path", "http.target")
KEPT_ATTRIBUTE = "sightline.sampling"


def is_probe(name: str, attributes: Attributes) -> bool:
    """Whether a span starting with this name and these attributes is a health/metrics probe."""
    attrs = attributes or {}
    for key in _URL_KEYS:
        value = attrs.get(key)
        if isinstance(value, str):
            path = value.split("?", 1)[0].rstrip("/")
            if path.endswith(PROBE_PATHS):
                return True
    method = attrs.get("rpc.method")
    if isinstance(method, str) and method in PROBE_RPCS:
        return True
    return name.rsplit("/", 1)[-1] in PROBE_RPCS and name.startswith("/")


def _probe_marked(parent: SpanContext) -> bool:
    return parent.trace_state.get(PROBE_STATE[0]) == PROBE_STATE[1]


class ProbeFilteringSampler(Sampler):
    """Drop probes (suppressed context, or a root span named like one) and anything under them."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        suppressed = context_api.get_value(_SUPPRESS_INSTRUMENTATION_KEY, parent_context)
        marked = _probe_marked(parent) if parent.is_valid else is_probe(name, attributes)
        if suppressed or marked:
            state = parent.trace_state if parent.is_valid else TraceState()
            state = state.update(*PROBE_STATE) if PROBE_STATE[0] in state else state.add(*PROBE_STATE)
            return SamplingResult(Decision.DROP, None, state)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ProbeFiltering{{{self.inner.get_description()}}}"


class _RatioOrRecord(TraceIdRatioBased):
    """Ratio sampling that records (without exporting) what it does not sample, for errors."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = super().should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.RECORD_AND_SAMPLE:
            return result
        return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)


RECORD_ONLY = StaticSampler(Decision.RECORD_ONLY)


def build_sampler(ratio: float, *, keep_errors: bool = True) -> Sampler:
    """The process's sampler: probes dropped, parent-based ``ratio``, unsampled spans recorded for errors."""
    if not keep_errors:
        return ProbeFilteringSampler(ParentBased(TraceIdRatioBased(ratio)))
    return ProbeFilteringSampler(
        ParentBased(
            _RatioOrRecord(ratio),
            remote_parent_not_sampled=RECORD_ONLY,
            local_parent_not_sampled=RECORD_ONLY,
        )
    )


class ErrorKeepingSpanProcessor(SpanProcessor):
    """Pass sampled spans to ``inner``; also unsampled spans that failed, and the rest of their trace here.

    Unparented database calls are passed on only when they fail.

    Unsampled spans are handed on as sampled copies marked ``sightline.sampling=error-kept``.
    """

    def __init__(self, inner: SpanProcessor, max_traces: int = 4096) -> None:
        self.inner = inner
        self.max_traces = max_traces
        self._failed: OrderedDict[int, None] = OrderedDict()
        self._lock = Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if _unparented_db_call(span) and span.status.status_code is not StatusCode.ERROR:
            return
        if ctx is None or ctx.trace_flags.sampled:
            self.inner.on_end(span)
            return
        with self._lock:
            keep = span.status.status_code is StatusCode.ERROR or ctx.trace_id in self._failed
            if keep:
                self._failed[ctx.trace_id] = None
                self._failed.move_to_end(ctx.trace_id)
                while len(self._failed) > self.max_traces:
                    self._failed.popitem(last=False)
        if keep:
            self.inner.on_end(_as_kept(span, ctx))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


def _unparented_db_call(span: ReadableSpan) -> bool:
    """A database call outside any request or job: a pool connect, a queue poll. Not a trace of anything.

    (Its attributes are set after it starts, so a sampler cannot see them; the processor can.)
    """
    attrs = span.attributes or {}
    return span.parent is None and ("db.system" in attrs or "db.system.name" in attrs)


def _as_kept(span: ReadableSpan, ctx: SpanContext) -> ReadableSpan:
    sampled = SpanContext(
        ctx.trace_id,
        ctx.span_id,
        ctx.is_remote,
        TraceFlags(ctx.trace_flags | TraceFlags.SAMPLED),
        ctx.trace_state,
    )
    return ReadableSpan(
        name=span.name,
        context=sampled,
        parent=span.parent,
        resource=span.resource,
        attributes={**dict(span.attributes or {}), KEPT_ATTRIBUTE: "error-kept"},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
