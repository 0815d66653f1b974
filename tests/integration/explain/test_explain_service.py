"""The explanation service as a real process: ``python -m sightline_explain`` (Ray + Serve) on loopback.

One process for the whole module (Ray takes ~30 s and ~2 GB to start); it is stopped at the end
and no Ray process started for it may be left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sightline_common.contracts import ExplainResponse
from sightline_common.manifest import load_manifest

from tests.unit.explain.explain_fixtures import ROOT, dicom_bytes, ham_images, load_rgb, synthetic_lesion
from tests.unit.preprocess.xray_files import MODEL as XRAY_MODEL
from tests.unit.preprocess.xray_files import xray_bytes

pytestmark = pytest.mark.integration
MODEL = "derm-cnn"
STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _two_derm_versions(repository: Path) -> Path:
    """The repository (checkpoints only) with derm-cnn version 2 a byte copy of version 1 under
    its own manifest, as a candidate kept beside the serving version is (issue 19)."""
    shutil.copytree(
        ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("*.onnx", "__pycache__", "*.png")
    )
    derm = repository / MODEL
    shutil.copytree(derm / "1", derm / "2")
    manifest = json.loads((derm / "manifest.json").read_text())
    digest = hashlib.sha256((derm / "2" / "model.pt").read_bytes()).hexdigest()
    (derm / "2" / "manifest.json").write_text(
        json.dumps({**manifest, "version": 2, "artifacts": {"2/model.pt": digest}})
    )
    return repository


@dataclass
class Service:
    url: str
    storage: Path
    version: int


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    # A short path under /tmp: Ray's Unix sockets live under its temp dir (108-byte limit).
    work = Path(tempfile.mkdtemp(prefix="sx-"))
    storage, ray_tmp = work / "objects", work / "ray"
    repository = _two_derm_versions(work / "repo")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SIGHTLINE_"))}
    env.update(
        {
            "SIGHTLINE_EXPLAIN_ENVIRONMENT": "test",
            "SIGHTLINE_EXPLAIN_HOST": "127.0.0.1",
            "SIGHTLINE_EXPLAIN_PORT": str(port),
            "SIGHTLINE_EXPLAIN_MODEL_REPOSITORY": str(repository),
            "SIGHTLINE_EXPLAIN_STORAGE_DIR": str(storage),
            "SIGHTLINE_EXPLAIN_RAY_TEMP_DIR": str(ray_tmp),
            "SIGHTLINE_EXPLAIN_RAY_OBJECT_STORE_MB": "100",
            "SIGHTLINE_EXPLAIN_MAX_BATCH_SIZE": "8",
            "SIGHTLINE_EXPLAIN_BATCH_WAIT_TIMEOUT_S": "0.2",
            "SIGHTLINE_EXPLAIN_LOG_JSON": "false",
            "SIGHTLINE_OTEL_EXPORTER": "none",
        }
    )
    log = (work / "explain.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sightline_explain"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"explain exited with {proc.returncode}: {(work / 'explain.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("explain did not become ready in time")
            time.sleep(1)
        yield Service(url, storage, load_manifest(ROOT / "model_repository", MODEL).version)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        # Ray's processes carry the temp dir in their command line: none may survive.
        deadline = time.monotonic() + 20
        while (left := _processes_mentioning(str(ray_tmp))) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
        assert not left, f"Ray processes left after shutdown: {left}"


def _rgb(i: int) -> np.ndarray:
    paths = ham_images(i + 1)
    if len(paths) > i:
        return load_rgb(paths[i])
    return synthetic_lesion(np.random.default_rng(i))[0]


def _put(service: Service, key: str, data: bytes) -> None:
    path = service.storage / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_ready_and_live(service: Service) -> None:
    r = httpx.get(f"{service.url}/health/ready", timeout=5)
    assert r.status_code == 200 and r.json()["checks"] == {"model": True, "storage": True}
    assert httpx.get(f"{service.url}/health/live", timeout=5).json() == {"status": "live"}


def test_explain_stored_dicom_writes_heatmap_and_overlay(service: Service) -> None:
    rgb = _rgb(0)
    _put(service, "studies/s1/instance.dcm", dicom_bytes(rgb))
    body = {
        "object_key": "studies/s1/instance.dcm",
        "output_prefix": "explanations/s1",
        "model_name": MODEL,
        "model_version": service.version,
        "target": 1,
    }
    r = httpx.post(f"{service.url}/v1/explain", json=body, timeout=60)
    assert r.status_code == 200, r.text
    res = ExplainResponse.model_validate(r.json())
    assert (
        res.heatmap_key == "explanations/s1/heatmap.npy" and res.overlay_key == "explanations/s1/overlay.png"
    )
    heat = np.load(io.BytesIO((service.storage / res.heatmap_key).read_bytes()))
    manifest = load_manifest(ROOT / "model_repository", MODEL)
    assert heat.dtype == np.float16
    assert heat.shape == (manifest.preprocessing.height, manifest.preprocessing.width)
    assert 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0
    assert res.model_sha256 == manifest.artifacts[f"{manifest.version}/model.pt"]
    with Image.open(service.storage / res.overlay_key) as png:
        assert png.format == "PNG" and png.width > heat.shape[1]
    peak = np.unravel_index(int(np.argmax(heat.astype(np.float32))), heat.shape)
    assert abs(res.peak.row - peak[0] / (heat.shape[0] - 1)) < 0.05


def test_one_service_explains_the_chest_model_too(service: Service) -> None:
    """Every model of the repository is loaded; the request's model_name picks the checkpoint."""
    chest = load_manifest(ROOT / "model_repository", XRAY_MODEL)
    _put(service, "studies/cxr/instance.dcm", xray_bytes(0, photometric="MONOCHROME1"))
    body = {
        "object_key": "studies/cxr/instance.dcm",
        "output_prefix": "explanations/cxr",
        "model_name": XRAY_MODEL,
        "model_version": chest.version,
    }
    r = httpx.post(f"{service.url}/v1/explain", json=body, timeout=60)
    assert r.status_code == 200, r.text
    res = ExplainResponse.model_validate(r.json())
    assert res.model_name == XRAY_MODEL and res.model_sha256 == chest.artifacts[f"{chest.version}/model.pt"]
    heat = np.load(io.BytesIO((service.storage / res.heatmap_key).read_bytes()))
    assert heat.shape == (chest.preprocessing.height, chest.preprocessing.width)
    r = httpx.post(f"{service.url}/v1/explain", json={**body, "model_name": "ct-model"}, timeout=30)
    assert r.status_code == 409 and r.json()["reason"] == "model-mismatch"


def test_dicom_bytes_directly(service: Service) -> None:
    r = httpx.post(
        f"{service.url}/v1/explain",
        params={"model_name": MODEL, "target": 0},
        content=dicom_bytes(_rgb(1)),
        headers={"content-type": "application/dicom"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    res = ExplainResponse.model_validate(r.json())
    assert res.target == 0 and res.heatmap_key.startswith("explanations/")
    assert (service.storage / res.heatmap_key).is_file() and (service.storage / res.overlay_key).is_file()


def test_other_model_version_is_refused(service: Service) -> None:
    body = {
        "object_key": "studies/s1/instance.dcm",
        "output_prefix": "explanations/s2",
        "model_name": MODEL,
        "model_version": service.version + 2,  # + 1 is the candidate this repository keeps
    }
    r = httpx.post(f"{service.url}/v1/explain", json=body, timeout=30)
    assert r.status_code == 409 and r.json()["reason"] == "model-mismatch"
    assert not (service.storage / "explanations/s2").exists()


def test_bad_requests_are_problem_details(service: Service) -> None:
    r = httpx.post(f"{service.url}/v1/explain", json={"object_key": "x"}, timeout=30)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = httpx.post(
        f"{service.url}/v1/explain",
        json={
            "object_key": "studies/missing.dcm",
            "output_prefix": "e/x",
            "model_name": MODEL,
            "model_version": service.version,
        },
        timeout=30,
    )
    assert r.status_code == 404
    r = httpx.post(
        f"{service.url}/v1/explain",
        params={"model_name": MODEL},
        content=b"not dicom",
        headers={"content-type": "application/dicom"},
        timeout=30,
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{service.url}/v1/explain", content=b"x", headers={"content-type": "text/plain"}, timeout=30
    )
    assert r.status_code == 415


def test_concurrent_requests_are_batched(service: Service) -> None:
    for i in range(6):
        _put(service, f"studies/c{i}/instance.dcm", dicom_bytes(_rgb(i)))

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{service.url}/v1/explain",
                        json={
                            "object_key": f"studies/c{i}/instance.dcm",
                            "output_prefix": f"explanations/c{i}",
                            "model_name": MODEL,
                            "model_version": service.version,
                            "target": i % 2,
                        },
                    )
                    for i in range(6)
                )
            )

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    sizes = [line for line in metrics.splitlines() if line.startswith("sightline_explain_batch_size_")]
    count = next(float(x.split()[-1]) for x in sizes if x.startswith("sightline_explain_batch_size_count"))
    total = next(float(x.split()[-1]) for x in sizes if x.startswith("sightline_explain_batch_size_sum"))
    assert total >= 6 and count < total, "concurrent requests were not batched together"
    assert 'sightline_stage_duration_seconds_count{service="explain",stage="gradcam"}' in metrics


def test_http_request_metrics_reach_the_replica_registry(service: Service) -> None:
    httpx.get(f"{service.url}/health/live", timeout=5)
    assert 'route="/health/live"' in httpx.get(f"{service.url}/metrics", timeout=10).text


def test_a_candidate_version_is_explained_with_its_own_checkpoint(service: Service) -> None:
    """A canary study's heatmap comes from the version that scored it, checked against that
    version's manifest; a version the repository lacks is refused."""
    _put(service, "studies/v2/instance.dcm", dicom_bytes(_rgb(0)))
    body = {
        "object_key": "studies/v2/instance.dcm",
        "output_prefix": "explanations/v2",
        "model_name": MODEL,
        "model_version": 2,
    }
    r = httpx.post(f"{service.url}/v1/explain", json=body, timeout=120)
    assert r.status_code == 200, r.text
    res = ExplainResponse.model_validate(r.json())
    served = load_manifest(ROOT / "model_repository", MODEL)
    assert res.model_version == 2
    assert res.model_sha256 == served.artifacts[f"{served.version}/model.pt"]  # the same bytes
    r = httpx.post(f"{service.url}/v1/explain", json={**body, "model_version": 3}, timeout=30)
    assert r.status_code == 409 and r.json()["reason"] == "model-mismatch"
