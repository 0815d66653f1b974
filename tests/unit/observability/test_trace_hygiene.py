"""Probes are not traced; real requests are, with exemplars linking latency buckets to their traces.

A real preprocess app (``create_app``, the health router every service shares) whose readiness
asks a gRPC Open Inference Protocol server on loopback ``ServerReady``/``ModelReady`` through the
preprocess service's own Triton client, with gRPC and httpx instrumented and tracing set up by
``setup_tracing`` writing the JSON-lines file. Before the fix each probe wrote two root traces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from sightline_common.metrics import instrument_app
from sightline_common.settings import TelemetrySettings
from sightline_common.telemetry import setup_tracing
from sightline_preprocess.app import create_app
from sightline_preprocess.clients.triton import TritonClient

N_PROBES = 20


class _ReadyServer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Answers readiness like Triton does, and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def ServerReady(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> Any:
        self.calls += 1
        return pb.ModelReadyResponse(ready=True)


@pytest.fixture
def triton_like() -> Iterator[tuple[str, _ReadyServer]]:
    servicer = _ReadyServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


@pytest.fixture
def traces(tmp_path: Path) -> Iterator[Path]:
    """The process's tracing as a service sets it up (JSON lines, synchronous), restored afterwards."""
    path = tmp_path / "traces.jsonl"
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE._done)
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE._done = None, False
    provider = setup_tracing(
        "preprocess", TelemetrySettings(exporter="jsonl", traces_file=path), synchronous=True
    )
    grpc_client = GrpcAioInstrumentorClient()
    grpc_client.instrument()
    try:
        yield path
    finally:
        grpc_client.uninstrument()
        provider.shutdown()
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE._done = saved


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class _Transformer:
    """The part of DicomTransformer the app uses: readiness through the real Triton client."""

    name = "derm-cnn"

    def __init__(self, triton: TritonClient, http: httpx.AsyncClient) -> None:
        self.triton, self.http = triton, http

    async def healthy(self) -> bool:
        self.triton._ready_cache = (0.0, False)  # no caching here: every probe calls gRPC
        if not await self.triton.model_ready("derm-cnn"):
            return False
        return (await self.http.get("http://dependency/api/status")).status_code == 200


def _app(target: str) -> tuple[FastAPI, _Transformer]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    HTTPXClientInstrumentor.instrument_client(http)
    transformer = _Transformer(TritonClient(target, 2.0), http)
    app = create_app(None, [transformer])  # type: ignore[arg-type, list-item]
    instrument_app(app, "preprocess")

    @app.get("/v1/work")
    async def work() -> dict[str, bool]:
        # A real request makes the same calls as the probe: these must be traced.
        return {"ready": await transformer.healthy()}

    FastAPIInstrumentor.instrument_app(app, excluded_urls="health/live,health/ready,metrics")
    return app, transformer


def test_probes_leave_no_trace_and_a_real_request_does(
    traces: Path, triton_like: tuple[str, _ReadyServer]
) -> None:
    target, servicer = triton_like
    app, _ = _app(target)
    with TestClient(app) as client:
        for _ in range(N_PROBES):
            assert client.get("/health/ready").status_code == 200
            assert client.get("/metrics").status_code == 200
        assert servicer.calls == 2 * N_PROBES, "the probes did not reach the gRPC server"
        assert _spans(traces) == [], "probes of /health/ready or /metrics were traced"

        assert client.get("/v1/work").json() == {"ready": True}
    spans = _spans(traces)
    assert len({s["trace_id"] for s in spans}) == 1, "a real request is one trace"
    names = {s["name"] for s in spans}
    assert {
        "/inference.GRPCInferenceService/ServerReady",
        "/inference.GRPCInferenceService/ModelReady",
    } <= names
    assert any(s["kind"] == "SERVER" and s["name"] == "GET /v1/work" for s in spans)
    assert any(s["kind"] == "CLIENT" and s["name"] == "GET" for s in spans), "the httpx call is missing"
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert [r["name"] for r in roots] == ["GET /v1/work"]


def test_latency_histogram_links_to_the_trace_by_exemplar(
    traces: Path, triton_like: tuple[str, _ReadyServer]
) -> None:
    app, _ = _app(triton_like[0])
    with TestClient(app) as client:
        client.get("/v1/work")
        (trace_id,) = {s["trace_id"] for s in _spans(traces)}
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        plain = client.get("/metrics")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    bucket = [
        line
        for line in om.text.splitlines()
        if line.startswith("sightline_http_request_duration_seconds_bucket{")
        and 'route="/v1/work"' in line
        and f'trace_id="{trace_id}"' in line
    ]
    assert bucket, "no latency bucket carries the request's trace id as exemplar"
    # Prometheus' classic text format has no exemplars; it is what a plain scrape still gets.
    assert plain.headers["content-type"].startswith("text/plain") and "trace_id" not in plain.text
