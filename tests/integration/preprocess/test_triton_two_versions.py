"""Issue 19: two versions of a model served by the real tritonserver at once, each reachable by
name through preprocess (ModelInferRequest.model_version) and through the gateway's client.

Version 2 is a byte copy of version 1 in a temporary copy of the repository whose configs say
``version_policy: { specific: { versions: [1, 2] } }`` (the committed ones keep ``latest: 1``):
both versions are ready, each request is answered by the version it named, with the same
probability, and a request naming no version gets Triton's choice (the newest).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from sightline_common.manifest import load_manifest

from sightline.stack import Stack, settings_on_free_ports
from tests.integration.preprocess.test_preprocess_triton import infer_request, outputs
from tests.unit.preprocess.preprocess_files import accepted, to_bytes

REPO = Path(__file__).resolve().parents[3]
MODEL = "derm-cnn"
LATEST_ONE = "version_policy: { latest: { num_versions: 1 } }"
BOTH = "version_policy: { specific: { versions: [1, 2] } }"

pytestmark = pytest.mark.integration


def two_version_repository(root: Path) -> Path:
    """A copy of derm-cnn whose version 2 is version 1's bytes, both loaded by Triton."""
    dst = root / MODEL
    shutil.copytree(REPO / "model_repository" / MODEL, dst, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(dst / "1", dst / "2")
    for config in (dst / "config.pbtxt", dst / "configs" / "local.pbtxt"):
        text = config.read_text()
        assert LATEST_ONE in text, config
        config.write_text(text.replace(LATEST_ONE, BOTH))
    return root


@contextmanager
def two_version_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Triton and preprocess serving :func:`two_version_repository` (the gateway test uses it too)."""
    repo = two_version_repository(tmp_path_factory.mktemp("repo"))
    settings = settings_on_free_ports(
        tmp_path_factory.mktemp("stack"), model_repository=repo, models=[MODEL], ready_timeout_s=180
    )
    st = Stack(settings)
    st.start(only=["triton", "preprocess"])
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with two_version_stack(tmp_path_factory) as st:
        yield st


def _items() -> list[bytes]:
    spec = load_manifest(REPO / "model_repository", MODEL).preprocessing
    return [to_bytes(accepted(n, spec)) for n in ("SC_rgb_jpeg_dcmtk.dcm", "US1_UNCR.dcm")]


def _call(stack: Stack, items: list[bytes], version: str) -> tuple[str, np.ndarray]:
    request = infer_request(items, MODEL)
    request.model_version = version
    with grpc.insecure_channel(f"127.0.0.1:{stack.settings.preprocess_grpc_port}") as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    return response.model_version, outputs(response)["probability"].reshape(-1)


def test_triton_serves_both_versions_at_once(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.settings.triton_http_port}/v2/models/{MODEL}"
    for version in (1, 2):
        assert urllib.request.urlopen(f"{base}/versions/{version}/ready", timeout=10).status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{base}/versions/3/ready", timeout=10)


def test_each_request_is_answered_by_the_version_it_names(stack: Stack) -> None:
    items = _items()
    v1, p1 = _call(stack, items, "1")
    v2, p2 = _call(stack, items, "2")
    default, p_default = _call(stack, items, "")
    assert (v1, v2, default) == ("1", "2", "2")  # no version named: Triton's newest
    np.testing.assert_allclose(p1, p2, atol=1e-6)  # the same bytes
    np.testing.assert_allclose(p_default, p2, atol=1e-6)
    assert not np.allclose(p1, p1[0])  # two different images


def test_a_version_triton_does_not_serve_is_an_error_not_another_version(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError):
        _call(stack, _items()[:1], "3")


_GATEWAY_CLIENT = """
import asyncio, json, sys
from pathlib import Path
from sightline_gateway.clients.services import GrpcPreprocess

async def run():
    client = GrpcPreprocess(sys.argv[1], 60.0)
    try:
        item = Path(sys.argv[2]).read_bytes()
        print(json.dumps([(await client.infer(item, "derm-cnn", v)).model_version for v in (1, 2, None)]))
    finally:
        await client.close()

asyncio.run(run())
"""


def test_the_gateways_client_names_the_version_of_the_study(stack: Stack, tmp_path: Path) -> None:
    """The gateway's own client (tritonclient, in a process of its own as in the gateway: its
    protobuf module and KServe's cannot share one interpreter) gets the version it asks for."""
    item = tmp_path / "item.dcm"
    item.write_bytes(_items()[0])
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _GATEWAY_CLIENT,
            f"127.0.0.1:{stack.settings.preprocess_grpc_port}",
            str(item),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [1, 2, 2]
