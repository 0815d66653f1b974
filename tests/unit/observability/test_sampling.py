"""Sampling: parent-based ratio, probes dropped with everything under them, errors kept at any ratio."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import set_span_in_context
from sightline_common.sampling import KEPT_ATTRIBUTE, ErrorKeepingSpanProcessor, build_sampler


def _tracing(ratio: float, keep_errors: bool = True) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=build_sampler(ratio, keep_errors=keep_errors))
    provider.add_span_processor(ErrorKeepingSpanProcessor(SimpleSpanProcessor(exporter)))
    return provider.get_tracer("test"), exporter


def test_ratio_keeps_about_that_share_of_root_traces_and_children_follow() -> None:
    tracer, exporter = _tracing(0.25)
    for _ in range(2000):
        with tracer.start_as_current_span("study"), tracer.start_as_current_span("deid"):
            pass
    spans = exporter.get_finished_spans()
    traces = {s.context.trace_id for s in spans}
    assert 350 < len(traces) < 650  # 500 expected
    assert len(spans) == 2 * len(traces), "a sampled root's children are sampled with it"


def test_remote_parent_decision_is_followed() -> None:
    tracer, exporter = _tracing(0.0)
    sampled = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    token = attach(set_span_in_context(NonRecordingSpan(sampled)))
    try:
        with tracer.start_as_current_span("POST /v1/deidentify", kind=SpanKind.SERVER):
            pass
    finally:
        detach(token)
    (span,) = exporter.get_finished_spans()
    assert span.context.trace_id == 0xABC and KEPT_ATTRIBUTE not in (span.attributes or {})


def test_error_spans_are_kept_with_their_parents_when_the_ratio_drops_the_trace() -> None:
    tracer, exporter = _tracing(0.0)
    with tracer.start_as_current_span("healthy study"):
        pass
    with tracer.start_as_current_span("POST /v1/studies", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("deid ok"):
            pass  # ended before the error: not kept (a head cannot know yet)
        with tracer.start_as_current_span("preprocess") as failing:
            failing.set_status(Status(StatusCode.ERROR))
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["preprocess", "POST /v1/studies"]
    kept = exporter.get_finished_spans()
    assert all(s.context.trace_flags.sampled for s in kept)
    assert all((s.attributes or {})[KEPT_ATTRIBUTE] == "error-kept" for s in kept)
    assert kept[0].parent is not None and kept[0].parent.span_id == kept[1].context.span_id


def test_errors_are_not_kept_when_the_setting_is_off() -> None:
    tracer, exporter = _tracing(0.0, keep_errors=False)
    with tracer.start_as_current_span("preprocess") as failing:
        failing.set_status(Status(StatusCode.ERROR))
    assert exporter.get_finished_spans() == ()


def test_probe_roots_are_dropped_with_their_children_at_ratio_one() -> None:
    tracer, exporter = _tracing(1.0)
    with tracer.start_as_current_span("/inference.GRPCInferenceService/ServerReady", kind=SpanKind.CLIENT):
        with tracer.start_as_current_span("child") as child:
            child.set_status(Status(StatusCode.ERROR))  # a failing probe is not an error trace either
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"url.full": "http://x:8011/health/ready"}
    ):
        pass
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"http.url": "http://x/metrics?x=1"}
    ):
        pass
    assert exporter.get_finished_spans() == ()
    with tracer.start_as_current_span("study"):
        # Inside a real request a readiness call is part of that request's trace.
        with tracer.start_as_current_span("/inference.GRPCInferenceService/ModelReady"):
            pass
    assert [s.name for s in exporter.get_finished_spans()] == [
        "/inference.GRPCInferenceService/ModelReady",
        "study",
    ]


def test_suppressed_context_starts_no_recorded_span() -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    tracer, exporter = _tracing(1.0)
    with suppress_instrumentation(), tracer.start_as_current_span("SELECT 1") as span:
        assert not span.is_recording()
    assert exporter.get_finished_spans() == ()


def test_database_calls_outside_any_request_are_not_exported_unless_they_fail() -> None:
    tracer, exporter = _tracing(1.0)
    for name in ("connect", "SELECT sightline.db"):  # a job queue's poll, a pool's connect
        with tracer.start_as_current_span(name, kind=SpanKind.CLIENT) as span:
            span.set_attribute("db.system", "sqlite")
    with tracer.start_as_current_span("UPDATE sightline.db", kind=SpanKind.CLIENT) as failing:
        failing.set_attribute("db.system", "sqlite")
        failing.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("job"), tracer.start_as_current_span("SELECT sightline.db") as span:
        span.set_attribute("db.system", "sqlite")
    assert [s.name for s in exporter.get_finished_spans()] == [
        "UPDATE sightline.db",
        "SELECT sightline.db",
        "job",
    ]
