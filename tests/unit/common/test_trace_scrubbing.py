"""What leaves a process in a span: no query string, no exception message (PHI defence in depth)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sightline_common.telemetry import ScrubbingSpanExporter


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def exported(attributes: dict[str, str], exception: Exception | None = None) -> ReadableSpan:
    kept = Kept()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(kept)))
    with provider.get_tracer("t").start_as_current_span("s", attributes=attributes) as span:
        if exception is not None:
            span.record_exception(exception)
    provider.shutdown()
    (out,) = kept.spans
    return out


def test_query_strings_and_fragments_are_cut_from_url_attributes() -> None:
    span = exported({"http.url": "http://gw/v1/studies?name=DOE^JANE#x", "http.target": "/a?b=c"})
    assert span.attributes == {"http.url": "http://gw/v1/studies", "http.target": "/a"}


def test_raw_queries_and_exception_messages_are_dropped() -> None:
    span = exported({"url.query": "name=DOE^JANE", "db.system": "sqlite"}, ValueError("DOE^JANE"))
    assert dict(span.attributes or {}) == {"db.system": "sqlite"}
    (event,) = span.events
    assert "exception.message" not in (event.attributes or {})
    assert event.attributes["exception.type"] == "ValueError"
    assert "DOE^JANE" not in repr(event.attributes)


def test_a_span_with_nothing_to_scrub_is_exported_as_it_ended() -> None:
    attributes = {"db.system": "sqlite", "http.url": "http://gw/v1/studies", "db.statement": "SELECT ?"}
    span = exported(attributes)
    assert dict(span.attributes or {}) == attributes
