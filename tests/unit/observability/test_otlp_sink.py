"""Triton's spans reach the local JSON-lines trace file through the stack's OTLP/HTTP sink.

Triton (opentelemetry-cpp) posts OTLP/HTTP JSON; the SDK's exporter posts protobuf. Both must land
in the stack's trace file in the services' line format, scrubbed, so that one study's trace is
complete locally.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from sightline.stack import plan, settings_on_free_ports
from sightline.stack.otlp_sink import serve
from tests.conftest import REPO

TRACE_ID = "5b8efff798038103d269b633813fc60c"
PARENT_ID = "eee19b7ec3c1b174"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "traces.jsonl"
    server = serve("127.0.0.1", 0, path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", path
    server.shutdown()
    server.server_close()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_triton_json_export_lands_in_the_trace_file_under_its_parent(sink: tuple[str, Path]) -> None:
    url, path = sink
    body = {  # the shape opentelemetry-cpp's OTLP/HTTP JSON exporter posts for a Triton inference
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "triton"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "triton-server"},
                        "spans": [
                            {
                                "traceId": TRACE_ID,
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": PARENT_ID,
                                "name": "derm-cnn",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000050000000",
                                "attributes": [
                                    {"key": "triton.model_name", "value": {"stringValue": "derm-cnn"}},
                                    {"key": "http.url", "value": {"stringValue": "/v2?patient=DOE"}},
                                ],
                                "events": [{"name": "COMPUTE_START", "timeUnixNano": "1700000000010000000"}],
                                "status": {},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    r = httpx.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 200
    (line,) = _lines(path)
    assert line["service"] == "triton" and line["name"] == "derm-cnn" and line["kind"] == "SERVER"
    assert (line["trace_id"], line["parent_span_id"]) == (TRACE_ID, PARENT_ID)
    assert line["end_ns"] - line["start_ns"] == 50_000_000
    assert line["events"] == [{"name": "COMPUTE_START", "attributes": {}}]
    assert line["attributes"] == {"triton.model_name": "derm-cnn", "http.url": "/v2"}  # scrubbed


def test_sdk_protobuf_export_lands_in_the_trace_file(sink: tuple[str, Path]) -> None:
    url, path = sink
    provider = TracerProvider(resource=Resource.create({"service.name": "triton"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url)))
    with provider.get_tracer("t").start_as_current_span("infer", kind=SpanKind.SERVER) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    (line,) = _lines(path)
    assert (line["trace_id"], line["name"], line["parent_span_id"]) == (trace_id, "infer", None)


def test_the_local_stack_points_triton_at_the_sink(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path, model_repository=REPO / "model_repository")
    planned = {c.name: c for c in plan(settings, "sightline_test_")}
    sink = planned["otlp-sink"]
    assert list(planned).index("otlp-sink") < list(planned).index("triton")
    assert str(tmp_path.resolve() / "traces.jsonl") in sink.command
    url = f"http://127.0.0.1:{settings.otlp_sink_port}/v1/traces"
    assert f"opentelemetry,url={url}" in planned["triton"].command
    # With a collector configured, Triton exports there and no sink runs.
    collector = settings_on_free_ports(
        tmp_path,
        model_repository=REPO / "model_repository",
        otel_exporter="otlp-http",
        otel_otlp_endpoint="http://collector:4318/v1/traces",
    )
    planned = {c.name: c for c in plan(collector, "sightline_test_")}
    assert "otlp-sink" not in planned
    assert "opentelemetry,url=http://collector:4318/v1/traces" in planned["triton"].command
