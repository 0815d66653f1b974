"""Each service installs from its own pyproject (plus the lock's pins) and its app imports.

This is what each service's Dockerfile does: a venv with only ``services/common`` and
``services/<name>`` installed under ``-c requirements.lock``, then ``python -m sightline_<name>``.
An import that the workspace venv satisfies but the service does not declare fails here.

The venvs are kept under ``.cache/service-venvs`` and reused: the dependency install (the slow
part, like the image's dependency layer) is keyed by a hash of the lock and the two pyprojects;
the source is reinstalled (``--no-deps``, like the image's last layer) when it changed. The
services are built in parallel; the time taken is printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

SERVICES = ("deid", "preprocess", "explain", "gateway", "receiver")
VENVS = REPO / ".cache" / "service-venvs"
LOCK = REPO / "requirements.lock"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Built:
    service: str
    seconds: float
    action: str  # "reused", "source reinstalled" or "built"
    error: str | None = None


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256(sys.version.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc" or ".egg-info" in str(f):
                continue
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{(proc.stdout + proc.stderr)[-4000:]}")


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _base_python() -> str:
    """The interpreter the workspace venv was made from (a venv made from a venv nests oddly)."""
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")


def _stage(service: str, dest: Path) -> list[str]:
    """Copies of the two packages (pyproject + src), as the Dockerfile COPYs them: pip builds in
    the source tree, which must not leave ``build/`` in the checkout nor race between services."""
    shutil.rmtree(dest, ignore_errors=True)
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc")
    for name in ("common", service):
        (dest / name).mkdir(parents=True)
        shutil.copy2(REPO / "services" / name / "pyproject.toml", dest / name / "pyproject.toml")
        shutil.copytree(REPO / "services" / name / "src", dest / name / "src", ignore=skip)
    return [str(dest / "common"), str(dest / service)]


def _build(service: str) -> Built:
    """Make (or reuse) the service's venv the way its Dockerfile does."""
    start = time.perf_counter()
    common, own = REPO / "services/common", REPO / f"services/{service}"
    deps_key = _digest([LOCK, common / "pyproject.toml", own / "pyproject.toml"])
    src_key = _digest([common / "src", own / "src"])
    venv = VENVS / f"{service}-{deps_key}"
    stage = VENVS / f".stage-{service}"
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--constraint", str(LOCK)]
    try:
        if not (venv / ".deps-ok").is_file():
            for old in VENVS.glob(f"{service}-*"):
                shutil.rmtree(old, ignore_errors=True)
            _run([_base_python(), "-m", "venv", str(venv)], REPO)
            _run([*pip, *_stage(service, stage)], REPO)
            (venv / ".deps-ok").write_text(deps_key)
            (venv / ".src-key").write_text(src_key)
            action = "built"
        elif _read(venv / ".src-key") != src_key:
            # Built by the venv's own setuptools (the pyprojects' build requirement): no isolated
            # build environment to make per package, which is most of a reinstall's time.
            _run([*pip, "setuptools>=68"], REPO)
            reinstall = ["--no-deps", "--force-reinstall", "--no-build-isolation"]
            _run([*pip, *reinstall, *_stage(service, stage)], REPO)
            (venv / ".src-key").write_text(src_key)
            action = "source reinstalled"
        else:
            action = "reused"
    except RuntimeError as exc:
        return Built(service, time.perf_counter() - start, "failed", str(exc))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Built(service, time.perf_counter() - start, action)


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[dict[str, Built]]:
    VENVS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        results = {b.service: b for b in pool.map(_build, SERVICES)}
    total = time.perf_counter() - start
    parts = ", ".join(f"{b.service} {b.seconds:.0f} s ({b.action})" for b in results.values())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nservice venvs in {total:.0f} s: {parts}", flush=True)
    yield results


@pytest.mark.parametrize("service", SERVICES)
def test_service_installs_alone_and_its_app_imports(service: str, built: dict[str, Built]) -> None:
    result = built[service]
    assert result.error is None, result.error
    py = VENVS.glob(f"{service}-*/bin/python")
    interpreter = str(next(py))
    # Outside the checkout, with no PYTHONPATH: only what the venv holds can be imported.
    probe = (
        f"import sightline_{service}.app, sightline_{service}.__main__, sightline_{service}.settings; "
        f"import sightline_{service}, pathlib; print(pathlib.Path(sightline_{service}.__file__).parent)"
    )
    proc = subprocess.run(
        [interpreter, "-c", probe], cwd="/", env=_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, (
        f"sightline_{service}.app does not import from its own pyproject:\n" + (proc.stderr[-4000:])
    )
    assert Path(proc.stdout.strip()).is_relative_to(VENVS), "imported from outside the service venv"
    check = subprocess.run(
        [interpreter, "-m", "pip", "check"], env=_env(), capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_installs_the_same_packages_under_the_lock(service: str) -> None:
    dockerfile = (REPO / "services" / service / "Dockerfile").read_text()
    assert "--constraint requirements.lock" in dockerfile
    assert f"./services/common ./services/{service}" in dockerfile
    assert f'ENTRYPOINT ["python", "-m", "sightline_{service}"]' in dockerfile
