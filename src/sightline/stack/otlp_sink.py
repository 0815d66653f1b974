"""A small OTLP/HTTP trace receiver that appends to the stack's JSON-lines trace file.

Triton exports its spans only over OTLP (opentelemetry-cpp, OTLP/HTTP with JSON or protobuf
bodies). The local stack writes traces as JSON lines, so without this Triton's hop was missing
from the local trace of a study. Spans go through the same scrubbing exporter and the same line
format as every service's (:mod:`sightline_common.telemetry`). Loopback only; in a cluster the
OpenTelemetry Collector has this job.

Run: ``python -m sightline.stack.otlp_sink --port 4318 --traces-file var/stack/traces.jsonl``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from sightline_common.telemetry import JsonLinesSpanExporter, ScrubbingSpanExporter

log = logging.getLogger(__name__)

_KINDS = {
    trace_pb2.Span.SPAN_KIND_SERVER: SpanKind.SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT: SpanKind.CLIENT,
    trace_pb2.Span.SPAN_KIND_PRODUCER: SpanKind.PRODUCER,
    trace_pb2.Span.SPAN_KIND_CONSUMER: SpanKind.CONSUMER,
}
_STATUS = {
    trace_pb2.Status.STATUS_CODE_OK: StatusCode.OK,
    trace_pb2.Status.STATUS_CODE_ERROR: StatusCode.ERROR,
}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":  # span attributes are flat: keep nested lists as JSON text
        return json.dumps({kv.key: _value(kv.value) for kv in v.kvlist_value.values})
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """An OTLP export request from an HTTP body (protobuf, or OTLP JSON with hex ids)."""
    request = ExportTraceServiceRequest()
    if "json" not in content_type:
        request.ParseFromString(body)
        return request
    doc = json.loads(body)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):  # OTLP JSON writes ids as hex; protobuf's JSON mapping wants base64
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    return request


def readable_spans(request: ExportTraceServiceRequest) -> list[ReadableSpan]:
    """The request's spans as SDK spans, so that they take the services' export path."""
    spans: list[ReadableSpan] = []
    for rs in request.resource_spans:
        resource = Resource(_attributes(rs.resource.attributes))
        for ss in rs.scope_spans:
            for s in ss.spans:
                trace_id = int.from_bytes(s.trace_id, "big")
                ctx = SpanContext(trace_id, int.from_bytes(s.span_id, "big"), False, TraceFlags(1))
                parent = (
                    SpanContext(trace_id, int.from_bytes(s.parent_span_id, "big"), True, TraceFlags(1))
                    if s.parent_span_id
                    else None
                )
                events = [Event(e.name, _attributes(e.attributes), e.time_unix_nano) for e in s.events]
                spans.append(
                    ReadableSpan(
                        name=s.name,
                        context=ctx,
                        parent=parent,
                        resource=resource,
                        attributes=_attributes(s.attributes),
                        events=events,
                        kind=_KINDS.get(s.kind, SpanKind.INTERNAL),
                        status=Status(_STATUS.get(s.status.code, StatusCode.UNSET)),
                        start_time=s.start_time_unix_nano,
                        end_time=s.end_time_unix_nano,
                    )
                )
    return spans


def _handler(exporter: SpanExporter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(
            self, status: int, body: bytes = b"", content_type: str = "application/x-protobuf"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._reply(200 if self.path == "/health/live" else 404, b"ok", "text/plain")

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def do_POST(self) -> None:
            body = self._body()
            if self.path != "/v1/traces":
                self._reply(404)
                return
            try:
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = parse_request(body, self.headers.get("Content-Type", ""))
            except (ValueError, OSError, zlib.error, json_format.ParseError) as exc:
                log.warning("unreadable OTLP export: %s", type(exc).__name__)
                self._reply(400)
                return
            exporter.export(readable_spans(request))
            json_reply = "json" in self.headers.get("Content-Type", "")
            self._reply(
                200,
                b"{}" if json_reply else ExportTraceServiceResponse().SerializeToString(),
                "application/json" if json_reply else "application/x-protobuf",
            )

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def serve(host: str, port: int, traces_file: Path) -> ThreadingHTTPServer:
    """A server (not yet serving) that appends received spans to ``traces_file``."""
    exporter = ScrubbingSpanExporter(JsonLinesSpanExporter(traces_file))
    return ThreadingHTTPServer((host, port), _handler(exporter))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--traces-file", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    server = serve(args.host, args.port, args.traces_file)
    log.info("OTLP/HTTP sink on %s:%d", args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
