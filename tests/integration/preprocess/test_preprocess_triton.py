"""The real path on loopback: tritonserver (python backend running model.onnx) and the preprocess
service (KServe ModelServer), started by the same ``Stack`` that ``sightline up`` uses.

A v2 gRPC request with DICOM bytes goes through preprocess to Triton; its probability must equal
the in-process model (ONNX Runtime on model.onnx and torch on model.pt) within 1e-4, for each
model of the repository (dermoscopy photographs and chest radiographs, in one Triton).
"""

from __future__ import annotations

import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from sightline_common.errors import UnprocessableInput
from sightline_common.manifest import ModelManifest, load_manifest
from sightline_preprocess.core.transform import STAT_FIELDS, transform_batch

from sightline.stack import Stack, kill_component, restart_component, settings_on_free_ports
from tests.unit.preprocess.preprocess_files import accepted, real_dataset, to_bytes
from tests.unit.preprocess.xray_files import MODEL as XRAY_MODEL
from tests.unit.preprocess.xray_files import xray_bytes

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration

COLOUR_FILES = ("US1_UNCR.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_16bit.dcm")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = settings_on_free_ports(
        tmp_path_factory.mktemp("stack"), model_repository=REPO / "model_repository", ready_timeout_s=180
    )
    st = Stack(settings)
    st.start(only=["triton", "preprocess"])
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def manifest() -> ModelManifest:
    return load_manifest(REPO / "model_repository", "derm-cnn")


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.preprocess_grpc_port}") as ch:
        yield ch


def infer_request(items: list[bytes], model: str = "derm-cnn") -> pb.ModelInferRequest:
    """v2 request: one BYTES tensor "dicom" [N], raw contents as 4-byte-length-prefixed items."""
    raw = b"".join(struct.pack("<I", len(b)) + b for b in items)
    tensor = pb.ModelInferRequest.InferInputTensor(name="dicom", datatype="BYTES", shape=[len(items)])
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[raw])


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        o.name: np.frombuffer(raw, np.float32).reshape(list(o.shape))
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def call(channel: grpc.Channel, items: list[bytes], model: str = "derm-cnn") -> pb.ModelInferResponse:
    return GRPCInferenceServiceStub(channel).ModelInfer(infer_request(items, model), timeout=60)


def _inprocess_probabilities(manifest: ModelManifest, items: list[bytes]) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    import torch
    from sightline_explain.core.nets import load_checkpoint

    batch, _ = transform_batch(items, manifest.preprocessing, 1 << 26)
    model_dir = REPO / "model_repository" / manifest.name / "1"
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(None, {session.get_inputs()[0].name: batch})[0].reshape(-1)
    net = load_checkpoint(str(model_dir / "model.pt"), manifest.architecture)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(batch)).numpy().reshape(-1)
    return {
        name: np.asarray([manifest.calibrated_probability(float(z)) for z in logits])
        for name, logits in (("onnxruntime", onnx_logits), ("torch", torch_logits))
    }


def test_probability_matches_the_in_process_model(channel: grpc.Channel, manifest: ModelManifest) -> None:
    spec = manifest.preprocessing
    items = [to_bytes(accepted(n, spec)) for n in COLOUR_FILES]
    expected = _inprocess_probabilities(manifest, items)
    batched = outputs(call(channel, items))
    one_by_one = np.concatenate([outputs(call(channel, [item]))["probability"] for item in items])
    assert batched["probability"].shape == (len(items), 1)
    assert batched["image_stats"].shape == (len(items), len(STAT_FIELDS))
    for served in (batched["probability"].reshape(-1), one_by_one.reshape(-1)):
        for runtime, probs in expected.items():
            np.testing.assert_allclose(served, probs, atol=1e-4, err_msg=runtime)
    assert not np.allclose(batched["probability"], batched["probability"][0])  # different images


def test_out_of_scope_score_is_the_served_graphs_second_output(
    channel: grpc.Channel, manifest: ModelManifest
) -> None:
    """Triton's python backend returns the score beside the logit; preprocess passes it on, equal
    to ONNX Runtime in process. The test files (ultrasound, secondary-capture photographs of
    non-skin scenes) are not dermoscopy: each is flagged."""
    import onnxruntime as ort

    oos = manifest.out_of_scope
    if oos is None:
        pytest.skip("derm-cnn has no out-of-scope score")
    items = [to_bytes(accepted(n, manifest.preprocessing)) for n in COLOUR_FILES]
    batch, _ = transform_batch(items, manifest.preprocessing, 1 << 26)
    onnx_path = REPO / "model_repository" / manifest.name / str(manifest.version) / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(["out_of_scope_score"], {"image": batch})[0]
    served = outputs(call(channel, items))["out_of_scope_score"]
    assert served.shape == (len(items), 1)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-4)
    assert (served[:, 0] > oos.threshold).all()


def test_both_models_are_ready_in_one_triton(stack: Stack) -> None:
    """One tritonserver serves every model of the repository; preprocess serves one KServe model each."""
    for name in ("derm-cnn", XRAY_MODEL):
        url = f"http://127.0.0.1:{stack.settings.triton_http_port}/v2/models/{name}/ready"
        assert urllib.request.urlopen(url, timeout=10).status == 200, name
        url = f"http://127.0.0.1:{stack.settings.preprocess_http_port}/v2/models/{name}/ready"
        assert urllib.request.urlopen(url, timeout=10).status == 200, name


def test_chest_xray_probability_matches_the_in_process_model(channel: grpc.Channel) -> None:
    """Parity for cxr-pneumonia: DX radiographs (MONOCHROME1/2, window or VOI LUT) through
    preprocess and Triton's python backend equal ONNX Runtime and torch in process, within 1e-4."""
    chest = load_manifest(REPO / "model_repository", XRAY_MODEL)
    items = [
        xray_bytes(i, photometric=("MONOCHROME2", "MONOCHROME1")[i % 2], voi=("window", "lut")[i // 2 % 2])
        for i in range(6)
    ]
    expected = _inprocess_probabilities(chest, items)
    batched = outputs(call(channel, items, XRAY_MODEL))
    one_by_one = np.concatenate([outputs(call(channel, [x], XRAY_MODEL))["probability"] for x in items])
    for served in (batched["probability"].reshape(-1), one_by_one.reshape(-1)):
        for runtime, probs in expected.items():
            np.testing.assert_allclose(served, probs, atol=1e-4, err_msg=runtime)
    assert not np.allclose(batched["probability"], batched["probability"][0])
    response = call(channel, items[:1], XRAY_MODEL)
    assert response.model_name == XRAY_MODEL and response.model_version == "1"


def test_each_model_refuses_the_others_studies(channel: grpc.Channel, manifest: ModelManifest) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(channel, [xray_bytes(0)], "derm-cnn")
    assert err.value.details().startswith("unprocessable: modality DX is not accepted")
    with pytest.raises(grpc.RpcError) as err:
        call(channel, [to_bytes(accepted("SC_rgb.dcm", manifest.preprocessing))], XRAY_MODEL)
    assert err.value.details().startswith("unprocessable: modality")


def test_response_names_the_model_version_and_manifest(
    channel: grpc.Channel, manifest: ModelManifest
) -> None:
    response = call(channel, [to_bytes(accepted("SC_rgb.dcm", manifest.preprocessing))])
    assert response.model_name == "derm-cnn" and response.model_version == "1"
    params = {k: v.string_param for k, v in response.parameters.items()}
    assert params["manifest_version"] == str(manifest.version)
    assert params["image_stats_fields"].split(",") == list(STAT_FIELDS)
    assert params["placeholder"] == str(manifest.placeholder).lower()


def test_unaccepted_modality_is_refused_with_422(channel: grpc.Channel) -> None:
    ct = to_bytes(real_dataset("CT_small.dcm"))
    with pytest.raises(grpc.RpcError) as err:
        call(channel, [ct])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("unprocessable: modality CT is not accepted")
    # The gRPC status is the class; the prefix is Sightline's error code, which is HTTP 422.
    # (KServe's v2 REST cannot carry non-UTF-8 BYTES tensors, so gRPC is the only protocol.)
    assert UnprocessableInput.code == "unprocessable" and UnprocessableInput.status == 422


def test_bad_dicom_gets_a_clear_error(channel: grpc.Channel, manifest: ModelManifest) -> None:
    cases = {
        b"this is not DICOM" * 10: "invalid-input: not a DICOM Part 10 file",
        to_bytes(
            accepted("JPEG-lossy.dcm", manifest.preprocessing)
        ): "invalid-input: pixel data could not be decoded",
    }
    for data, needle in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            call(channel, [data])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(needle)


def test_absurd_dimensions_are_refused(channel: grpc.Channel, manifest: ModelManifest) -> None:
    ds = accepted("SC_rgb.dcm", manifest.preprocessing)
    ds.Rows = ds.Columns = 65535
    with pytest.raises(grpc.RpcError) as err:
        call(channel, [to_bytes(ds)])
    assert err.value.details() == "invalid-input: image dimensions exceed the configured limit"


def test_concurrent_requests_are_batched_by_triton(
    stack: Stack, channel: grpc.Channel, manifest: ModelManifest
) -> None:
    item = to_bytes(accepted("SC_rgb.dcm", manifest.preprocessing))
    metrics_url = f"http://127.0.0.1:{stack.settings.triton_metrics_port}/metrics"

    def counters() -> dict[str, float]:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        found = {}
        for line in text.splitlines():
            for name in ("nv_inference_request_success", "nv_inference_exec_count"):
                if line.startswith(name + "{") and 'model="derm-cnn"' in line:
                    found[name] = float(line.rsplit(" ", 1)[1])
        return found

    before = counters()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: call(channel, [item]), range(64)))
    after = counters()
    requests = after["nv_inference_request_success"] - before["nv_inference_request_success"]
    executions = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
    assert requests == 64
    assert executions < requests  # dynamic batching merged some requests


def test_not_ready_when_triton_dies_and_ready_again_after_restart(
    stack: Stack, channel: grpc.Channel
) -> None:
    ready_url = f"http://127.0.0.1:{stack.settings.preprocess_http_port}/health/ready"

    def ready() -> bool:
        try:
            return urllib.request.urlopen(ready_url, timeout=10).status == 200
        except urllib.error.HTTPError:
            return False

    assert ready()
    kill_component(stack.settings, "triton")
    deadline = time.monotonic() + 20
    while ready() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not ready()
    with pytest.raises(grpc.RpcError) as err:
        call(channel, [b"x"])  # refused as bad input before Triton is needed
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    restart_component(stack, "triton")
    deadline = time.monotonic() + 30
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready()
