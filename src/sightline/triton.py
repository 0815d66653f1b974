"""The real ``tritonserver`` binary shipped in the nvidia-pytriton wheel, made runnable on a CPU.

The wheel carries Triton 2.51 with only the python backend. Three things make it start:
a backend folder holding the python backend plus the stub for the running interpreter; the
interpreter's LIBDIR and the wheel's ``nvidia_pytriton.libs`` on ``LD_LIBRARY_PATH`` (without
the latter the stub hangs looking for libcudart); the venv's ``bin`` first on ``PATH`` (the
stub ignores PYTHONPATH and takes its prefix from the first ``python3`` found).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    libs_dir: Path


def _pytriton_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed (pip install nvidia-pytriton==0.7.0)")
    return Path(next(iter(spec.submodule_search_locations)))


def prepare_backends(target: Path) -> TritonInstall:
    """Assemble ``<target>/python/`` (backend library, utils and the stub for this Python)."""
    root = _pytriton_root()
    server = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no python backend stub for Python {version}")
    dest = target / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for src in (
        server / "backends" / "python" / "libtriton_python.so",
        server / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        out = dest / src.name
        if not out.exists() or out.stat().st_size != src.stat().st_size:
            shutil.copy2(src, out)
    libs = root.parent / "nvidia_pytriton.libs"
    return TritonInstall(binary=server / "bin" / "tritonserver", backend_dir=target, libs_dir=libs)


def triton_environment(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver and its python stubs."""
    env = dict(base if base is not None else os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(install.libs_dir), env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def triton_command(
    install: TritonInstall,
    model_repository: Path,
    *,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    host: str = "127.0.0.1",
    model_config_name: str | None = "local",
    shm_prefix: str = "triton_python_backend_shm_region_",
    otlp_http_url: str | None = None,
) -> list[str]:
    """The tritonserver command line for a CPU host (python backend).

    With ``otlp_http_url`` Triton traces every request in OpenTelemetry mode, continuing the
    caller's W3C trace context (the preprocess service's gRPC client span).
    """
    cmd = [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={install.backend_dir}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--exit-on-error=false",
        "--strict-readiness=true",
        "--log-verbose=0",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
    ]
    if model_config_name:
        cmd.append(f"--model-config-name={model_config_name}")
    if otlp_http_url:
        for option in (
            "mode=opentelemetry",
            f"opentelemetry,url={otlp_http_url}",
            "opentelemetry,resource=service.name=triton",
            "rate=1",
            "level=TIMESTAMPS",
        ):
            cmd += ["--trace-config", option]
    return cmd
