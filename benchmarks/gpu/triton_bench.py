"""The Triton-served section: the bundled tritonserver (nvidia-pytriton) with a python-backend model
that runs torch on the GPU, against the in-process figures of the same run.

The model repository is generated into a temporary folder (never into model_repository/): a
config derived from the production ``config.pbtxt`` (same tensor names and dims), the served
``model.pt`` (sha256 checked), ``nets.py`` and ``triton_torch_model.py`` as ``model.py``. The
client speaks the v2 HTTP protocol with binary tensors through the standard library, so the GPU
machine needs no tritonclient.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.gpu.common import MODEL_NAME, REPO, ModelSpec, model_spec, percentile

NETS = REPO / "services" / "explain" / "src" / "sightline_explain" / "core" / "nets.py"
MODEL_FILE = Path(__file__).with_name("triton_torch_model.py")


def build_repository(
    target: Path, spec: ModelSpec, *, gpu: bool, instances: int, max_batch: int, precision: str
) -> Path:
    """A one-model repository serving ``spec`` with the torch python-backend model."""
    production = (spec.repository / MODEL_NAME / "config.pbtxt").read_text()
    tensors = re.findall(r"^(?:input|output) \[.*\]$", production, flags=re.MULTILINE)
    if len(tensors) != 2:
        raise RuntimeError("config.pbtxt: expected one input and one output line")
    params = {
        "architecture": json.dumps(spec.architecture),
        "precision": precision,
        "channels_last": "yes" if gpu else "no",
    }
    lines = [
        f'name: "{MODEL_NAME}"',
        'backend: "python"',
        f"max_batch_size: {max_batch}",
        *tensors,
        f"instance_group [ {{ kind: {'KIND_GPU' if gpu else 'KIND_CPU'}, count: {instances} }} ]",
        "dynamic_batching { max_queue_delay_microseconds: 0 }",
        *(
            f'parameters: {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}'
            for k, v in params.items()
        ),
    ]
    model_dir = target / MODEL_NAME
    version = model_dir / str(spec.version)
    version.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text("\n".join(lines) + "\n")
    shutil.copy2(spec.weights, version / "model.pt")
    shutil.copy2(NETS, version / "nets.py")
    shutil.copy2(MODEL_FILE, version / "model.py")
    return target


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TritonServer:
    """tritonserver on loopback serving a generated repository; ``stop`` cleans its shared memory."""

    def __init__(self, workdir: Path, plan: dict[str, Any]) -> None:
        from sightline.triton import prepare_backends, triton_command, triton_environment

        gpu = plan["device"].startswith("cuda")
        self.repo = build_repository(
            workdir / "repo",
            model_spec(),
            gpu=gpu,
            instances=plan["triton_instances"],
            max_batch=max(plan["batches"]),
            precision=plan["triton_precision"],
        )
        install = prepare_backends(workdir / "backends")
        self.binary = install.binary
        self.http, grpc, metrics = _free_ports(3)
        self.shm_prefix = f"gpu_suite_{os.getpid()}_"
        shm = plan["triton_shm_bytes"]
        cmd = triton_command(
            install,
            self.repo,
            http_port=self.http,
            grpc_port=grpc,
            metrics_port=metrics,
            model_config_name=None,
            shm_prefix=self.shm_prefix,
        )
        cmd += [
            f"--backend-config=python,shm-default-byte-size={shm}",
            f"--backend-config=python,shm-growth-byte-size={shm}",
        ]
        self.log_path = workdir / "tritonserver.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=triton_environment(install),
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http}"

    def wait_ready(self, timeout: float) -> float:
        """Seconds until the model is ready; RuntimeError with the log's tail when it is not."""
        started = time.monotonic()
        ready = f"http://{self.url}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(ready, timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"tritonserver not ready after {time.monotonic() - started:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 1500) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        self._log.close()
        for path in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            path.unlink(missing_ok=True)


def _request(spec: ModelSpec, batch: bytes, n: int) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": spec.input_name,
                    "shape": [n, 3, spec.height, spec.width],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(batch)},
                }
            ],
            "outputs": [{"name": spec.output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + batch, headers


def infer(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> bytes:
    """One v2 inference with binary tensors; the output tensor's raw bytes."""
    conn.request("POST", f"/v2/models/{MODEL_NAME}/infer", body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"Triton answered {response.status}: {data[:300]!r}")
    return data[int(response.getheader("Inference-Header-Content-Length") or 0) :]


def _drive(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, iters: int, seconds: float
) -> tuple[list[float], float]:
    """Latencies of every request and wall seconds, ``concurrency`` clients each sending in a loop."""
    lat: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    # Every client connects and sends one warm-up request before the clock starts.
    stop = [0.0]

    def arm() -> None:
        stop[0] = time.perf_counter() + seconds

    start = threading.Barrier(concurrency + 1, action=arm)

    def client() -> None:
        conn = http.client.HTTPConnection(url, timeout=120)
        mine: list[float] = []
        try:
            try:
                infer(conn, body, headers)
            finally:
                start.wait()
            while len(mine) < iters and (not mine or time.perf_counter() < stop[0]):
                t = time.perf_counter()
                infer(conn, body, headers)
                mine.append(time.perf_counter() - t)
        except (OSError, RuntimeError, http.client.HTTPException) as exc:  # raised after the join
            errors.append(exc)
        finally:
            conn.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = stop[0] - seconds
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return lat, time.perf_counter() - t0


def _served_row(
    plan: dict[str, Any], spec: ModelSpec, url: str, reference: Any, batch: int, peak: float, per_image: int
) -> dict[str, Any]:
    """One batch size through Triton: answers against fp32 torch, latency, then throughput."""
    import numpy as np
    import torch

    from benchmarks.gpu.common import synthetic

    x = synthetic(spec, batch, torch.device("cpu"))
    body, headers = _request(spec, x.numpy().tobytes(), batch)
    conn = http.client.HTTPConnection(url, timeout=120)
    served = np.frombuffer(infer(conn, body, headers), dtype=np.float32).reshape(batch, -1)
    conn.close()
    with torch.no_grad():
        ref = reference(x).double()
    got = torch.from_numpy(served.copy()).double()
    rel_err = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
    lat, _ = _drive(url, body, headers, 1, plan["iters"], plan["seconds"])
    conc = plan["triton_concurrency"]
    many, wall = _drive(url, body, headers, conc, plan["iters"], plan["seconds"])
    ips = len(many) * batch / wall
    return {
        "variant": f"triton-python-{plan['triton_precision']}",
        "precision": plan["triton_precision"],
        "batch": batch,
        "rel_err_vs_fp32": round(rel_err, 6),
        "n": len(lat),
        "p50_ms": round(percentile(lat, 50) * 1000, 4),
        "p99_ms": round(percentile(lat, 99) * 1000, 4),
        "concurrency": conc,
        "images_per_s": round(ips, 2),
        "tflops": round(ips * per_image / 1e12, 6),
        "pct_peak": round(100 * ips * per_image / 1e12 / peak, 5),
    }


def run_triton_client(plan: dict[str, Any]) -> dict[str, Any]:
    """Latency at concurrency 1 and throughput at ``triton_concurrency``, each batch size."""
    import torch

    from benchmarks.gpu.common import load_model, precision_peak

    spec = model_spec()
    url = plan["triton_url"]
    reference = load_model(spec, torch.device("cpu"))
    peak = precision_peak(plan["peaks"], plan["triton_precision"])
    per_image = plan["flops"]["forward"]
    rows: list[dict[str, Any]] = []
    for batch in plan["batches"]:
        try:
            rows.append(_served_row(plan, spec, url, reference, batch, peak, per_image))
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            rows.append(
                {
                    "batch": batch,
                    "variant": f"triton-python-{plan['triton_precision']}",
                    "error": str(exc)[:400],
                }
            )
    return {"transport": "v2 HTTP, binary tensors, fp32 input", "rows": rows}
