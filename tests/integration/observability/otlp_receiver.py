"""Small OTLP trace receivers for tests: HTTP (protobuf) and gRPC, on loopback, collecting spans."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class SpanStore:
    """Spans received so far, flattened (hex ids, attribute dicts, service name)."""

    spans: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    #: Exports the receiver could not read (a test failing on a missing span says why).
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest, raw: bytes) -> None:
        found = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    found.append(
                        {
                            "service": resource.get("service.name"),
                            "resource": resource,
                            "scope": ss.scope.name,
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_span_id": s.parent_span_id.hex() or None,
                            "kind": s.kind,
                            "attributes": {kv.key: _value(kv.value) for kv in s.attributes},
                            "events": [
                                {
                                    "name": e.name,
                                    "attributes": {kv.key: _value(kv.value) for kv in e.attributes},
                                }
                                for e in s.events
                            ],
                        }
                    )
        with self.lock:
            self.spans.extend(found)
            self.raw.append(raw)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)


def _parse_json(body: bytes, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
    import base64
    import json

    from google.protobuf import json_format

    doc = json.loads(body)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):  # OTLP JSON encodes ids as hex; protobuf JSON expects base64
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    json_format.ParseDict(doc, request, ignore_unknown_fields=True)


class _Handler(BaseHTTPRequestHandler):
    store: SpanStore

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self) -> None:
        body = self._body()
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            if "json" in self.headers.get("Content-Type", ""):
                # OTLP/HTTP JSON (opentelemetry-cpp's default, e.g. Triton): ids are hex strings there.
                _parse_json(body, request)
            else:
                request.ParseFromString(body)
        except Exception as exc:  # recorded for the test's failure message, answered 400
            with self.store.lock:
                self.store.errors.append(f"{self.headers.get('User-Agent')}: {exc!r}"[:500])
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.store.add(request, body)
        payload = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:  # quiet
        return None


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def Export(self, request: Any, context: Any) -> Any:
        self.store.add(request, request.SerializeToString())
        return trace_service_pb2.ExportTraceServiceResponse()


@dataclass
class Receivers:
    store: SpanStore
    http_endpoint: str  # full URL for the OTLP/HTTP exporter
    grpc_endpoint: str  # host:port for the OTLP/gRPC exporter


def start_receivers() -> Iterator[Receivers]:
    """Start both receivers on free loopback ports; yield their endpoints; stop them."""
    store = SpanStore()
    handler = type("Handler", (_Handler,), {"store": store})
    # Six processes flush at once when a traced request ends: a listen backlog of 5 (the
    # socketserver default) makes some of them wait on SYN retransmits.
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 128})
    httpd = server_class(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(store), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Receivers(
            store, f"http://127.0.0.1:{httpd.server_address[1]}/v1/traces", f"127.0.0.1:{grpc_port}"
        )
    finally:
        server.stop(0)
        httpd.shutdown()
        httpd.server_close()
