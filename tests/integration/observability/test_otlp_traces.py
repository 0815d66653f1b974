"""Traces over OTLP to a real receiver on loopback: parent links across services, no planted PHI.

The deid service runs as a real uvicorn process with ``SIGHTLINE_OTEL_EXPORTER=otlp-http`` pointed at
an OTLP/HTTP receiver started here; the calling "gateway" side is this test with the SDK's OTLP/gRPC
exporter (setup_tracing's exporter) pointed at a gRPC receiver. Studies carry planted fake PHI
("CNRY..." canaries in every attribute kind); no planted string may reach a span, a log record or a
metric label. The full gateway -> deid -> preprocess -> Triton -> explain trace runs once the
gateway serves /v1/studies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from sightline_common.settings import TelemetrySettings
from sightline_common.telemetry import ScrubbingSpanExporter, _exporter, inject_headers

from tests.conftest import free_ports
from tests.integration.observability.otlp_receiver import Receivers, start_receivers
from tests.unit.deid.deid_canary import CANARY_UID_ROOT, canary_dataset, to_bytes

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
PLANTED = ("CNRY", CANARY_UID_ROOT, "DOE^JANE", "PLANTED-PHI-QUERY")
#: Quasi-identifiers deid retains (Retain Device Identity) and turns into class keys (issue 21):
#: kept in the de-identified file, never in a span, log line, header or metric label.
RETAINED = ("ZQXQISTATION", "ZQXQISERIAL", "ZQXQIMODEL")


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    yield from start_receivers()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"service exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} not ready: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def deid(receivers: Receivers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("deid")
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGHTLINE_", "OTEL_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(str(ROOT / "services" / n / "src") for n in ("common", "deid")),
            "SIGHTLINE_DEID_ENVIRONMENT": "development",
            "SIGHTLINE_DEID_PORT": str(port),
            "SIGHTLINE_DEID_RECIPE": "sightline-basic",
            "SIGHTLINE_DEID_PSEUDONYM_KEY": "observability-test-key-0123456789abcdef",
            "SIGHTLINE_DEID_LOG_LEVEL": "DEBUG",
            "SIGHTLINE_OTEL_EXPORTER": "otlp-http",
            "SIGHTLINE_OTEL_OTLP_ENDPOINT": receivers.http_endpoint,
        }
    )
    log = tmp / "deid.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sightline_deid"], env=env, stdout=fh, stderr=fh, cwd=tmp
        )
    try:
        _wait(f"http://127.0.0.1:{port}/health/ready", proc, log)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client_provider(receivers: Receivers) -> TracerProvider:
    """The caller's tracing: the SDK's OTLP/gRPC exporter as setup_tracing builds it."""
    exporter = _exporter(TelemetrySettings(exporter="otlp-grpc", otlp_endpoint=receivers.grpc_endpoint))
    assert exporter is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": "gateway-under-test", "service.namespace": "sightline"})
    )
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(exporter)))
    return provider


def _spans_of(receivers: Receivers, trace_id: str, services: set[str], timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in receivers.store.snapshot() if s["trace_id"] == trace_id]
        if services <= {s["service"] for s in spans}:
            time.sleep(1.0)  # let the batch processor flush the rest of this trace
            return [s for s in receivers.store.snapshot() if s["trace_id"] == trace_id]
        time.sleep(0.2)
    seen = receivers.store.snapshot()
    got = {s["service"] for s in seen}
    in_trace = sorted({s["service"] for s in seen if s["trace_id"] == trace_id})
    missing = services - set(in_trace)
    # A missing service's spans from other traces tell a dropped export (they name other parents)
    # from a context that did not propagate (a root, or a parent of this trace under another id).
    ours = {s["span_id"]: s["name"] for s in seen if s["trace_id"] == trace_id}
    elsewhere = [
        (s["service"], s["name"], s["trace_id"][:8], ours.get(s["parent_span_id"] or "", s["parent_span_id"]))
        for s in seen
        if s["service"] in missing
    ]
    pytest.fail(
        f"trace {trace_id}: no span from {sorted(missing)} within {timeout} s "
        f"(this trace's services: {in_trace}; services seen at all: {sorted(got)}; "
        f"their spans in other traces (service, name, trace, parent): {elsewhere[-12:]}; "
        f"exports the receiver could not read: {receivers.store.errors[-3:]})"
    )


def test_trace_crosses_services_with_parent_links_and_no_phi(
    receivers: Receivers, deid: tuple[str, Path]
) -> None:
    url, log = deid
    provider = _client_provider(receivers)
    tracer = provider.get_tracer("sightline.test")
    ds = canary_dataset("XC", 1)
    ds.PatientName = "DOE^JANE"
    ds.StationName, ds.DeviceSerialNumber, ds.ManufacturerModelName = RETAINED
    body = to_bytes(ds)
    with tracer.start_as_current_span("POST /v1/studies", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("deid", kind=SpanKind.CLIENT) as call:
            headers = inject_headers(
                {"content-type": "application/dicom", "X-Sightline-Tenant": "hospital-a"}
            )
            r = httpx.post(
                f"{url}/v1/deidentify",
                params={"note": "PLANTED-PHI-QUERY"},
                content=body,
                headers=headers,
                timeout=30,
            )
            generalised = httpx.post(
                f"{url}/v1/deidentify",
                content=body,
                headers={**headers, "X-Sightline-Deid-Generalise": "1"},
                timeout=30,
            )
        # A refusal path too: a burned-in study is refused, and the refusal is traced.
        ds.BurnedInAnnotation = "YES"
        with tracer.start_as_current_span("deid-refused", kind=SpanKind.CLIENT):
            refused = httpx.post(
                f"{url}/v1/deidentify",
                content=to_bytes(ds),
                headers=inject_headers(
                    {"content-type": "application/dicom", "X-Sightline-Tenant": "hospital-a"}
                ),
                timeout=30,
            )
    provider.shutdown()
    assert r.status_code == 200, r.text
    assert generalised.status_code == 200, generalised.text
    assert refused.status_code == 422
    assert RETAINED[0].encode() in r.content and RETAINED[0].encode() not in generalised.content
    for response in (r, generalised):  # the class keys are hashes: no retained value in a header
        assert not [v for v in RETAINED if v in str(response.headers)]
    trace_id = format(root.get_span_context().trace_id, "032x")
    call_id = format(call.get_span_context().span_id, "016x")

    spans = _spans_of(receivers, trace_id, {"gateway-under-test", "deid"})
    by_id = {s["span_id"]: s for s in spans}
    deid_spans = [s for s in spans if s["service"] == "deid"]
    server = [s for s in deid_spans if s["kind"] == 2 and s["parent_span_id"] == call_id]  # SPAN_KIND_SERVER
    assert server, (
        f"no deid server span under the caller's: {[(s['name'], s['parent_span_id']) for s in deid_spans]}"
    )
    assert server[0]["attributes"].get("http.route") == "/v1/deidentify"
    # Every span but the root has its parent in the same trace: the tree is whole.
    orphans = [s["name"] for s in spans if s["parent_span_id"] and s["parent_span_id"] not in by_id]
    assert not orphans, orphans
    roots = [s for s in spans if not s["parent_span_id"]]
    assert [s["name"] for s in roots] == ["POST /v1/studies"]

    # No planted string anywhere in what the receiver got (attributes, events, names, raw bytes).
    for raw in receivers.store.raw:
        for planted in (*PLANTED, *RETAINED):
            assert planted.encode() not in raw, f"planted {planted!r} reached an exported span"
    # ... nor in the service's log records (DEBUG level) ...
    text = log.read_text(errors="replace")
    assert "deid" in text
    for planted in (*PLANTED, *RETAINED):
        assert planted not in text, f"planted {planted!r} in the deid log"
    # ... nor in any metric label.
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "sightline_deid_requests_total" in metrics
    for planted in (*PLANTED, *RETAINED):
        assert planted not in metrics, f"planted {planted!r} in a metric label"


@pytest.mark.e2e
@pytest.mark.slow
def test_full_pipeline_trace_through_the_gateway(receivers: Receivers, tmp_path: Path) -> None:
    """One study: gateway -> deid -> preprocess -> Triton -> explain spans in one trace, over OTLP.

    Triton runs in its OpenTelemetry trace mode (OTLP/HTTP JSON) and continues the preprocess
    service's gRPC client span.
    """
    from sightline.cli import _dev_token
    from sightline.stack import Stack, settings_on_free_ports
    from tests.unit.gateway.gateway_fixtures import PHI, phi_dicom
    from tests.unit.gateway.gateway_fixtures import PLANTED as GATEWAY_PLANTED

    settings = settings_on_free_ports(
        tmp_path,
        model_repository=ROOT / "model_repository",
        otel_exporter="otlp-http",
        otel_otlp_endpoint=receivers.http_endpoint,
    )
    ports = {"gateway_port": settings.gateway_port}
    stack = Stack(settings)
    stack.start()
    try:
        token = _dev_token(settings)
        r = httpx.post(
            f"http://127.0.0.1:{ports['gateway_port']}/v1/studies",
            params={"mode": "sync"},
            content=phi_dicom(rows=150, cols=200),
            headers={"Content-Type": "application/dicom", "Authorization": f"Bearer {token}"},
            timeout=180,
        )
        assert r.status_code == 200, r.text
        trace_id = r.json()["trace_id"]
        assert r.json()["explanation"]["status"] == "available"
        spans = _spans_of(
            receivers, trace_id, {"gateway", "deid", "preprocess", "triton", "explain"}, timeout=90
        )
    finally:
        stack.stop()
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_span_id"] is None]
    assert len(roots) == 1 and roots[0]["service"] == "gateway", [(s["service"], s["name"]) for s in roots]
    orphans = [
        (s["service"], s["name"]) for s in spans if s["parent_span_id"] and s["parent_span_id"] not in ids
    ]
    assert not orphans, f"spans whose parent never arrived: {orphans}"
    by_id = {s["span_id"]: s for s in spans}
    for service in ("deid", "preprocess", "explain"):
        # Each service's server span hangs under a gateway client span (W3C traceparent over HTTP/gRPC).
        entry = [
            s
            for s in spans
            if s["service"] == service and by_id.get(s["parent_span_id"], {}).get("service") == "gateway"
        ]
        assert entry, f"no {service} span is a child of a gateway span"
    assert any(s["name"] == "triton.infer" for s in spans), "the Triton hop is missing"
    triton = [s for s in spans if s["service"] == "triton"]
    assert any(by_id.get(s["parent_span_id"], {}).get("service") == "preprocess" for s in triton), (
        "Triton's spans do not continue the preprocess service's gRPC call"
    )
    raw = b"".join(receivers.store.raw)
    for planted in (*GATEWAY_PLANTED, PHI):
        assert planted.encode() not in raw, f"planted {planted!r} reached the trace backend"
