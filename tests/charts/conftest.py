"""Helm rendering helpers for the chart tests.

Helm comes from $HELM, then .cache/bin/helm (scripts/get-helm.sh), then PATH. Without it every
chart test skips with that reason (fails under CI=true); CI runs scripts/get-helm.sh first.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "sightline"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "sightline"
NAMESPACE = "sightline"


def _find_helm() -> str | None:
    for candidate in (os.environ.get("HELM"), str(ROOT / ".cache" / "bin" / "helm"), shutil.which("helm")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


HELM = _find_helm()


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if HELM is None:
        skip_or_fail_in_ci("helm not found: run scripts/get-helm.sh (or set $HELM)")
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check, timeout=120)


@functools.cache
def render_text(values_file: str | None = None, *sets: str) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file:
        args += ["-f", values_file]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return result.stdout


def render(values_file: str | None = None, *sets: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(values_file, *sets)) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) for every workload, custom resources included."""
    found: list[tuple[str, dict[str, Any]]] = []
    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        if kind == "Pod":
            found.append((name, spec))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((name, spec["template"]["spec"]))
        elif kind == "RayService":
            cluster = spec["rayClusterConfig"]
            found.append((f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]))
            for group in cluster["workerGroupSpecs"]:
                found.append((f"{name}/{group['groupName']}", group["template"]["spec"]))
        elif kind == "InferenceService":
            for role in ("predictor", "transformer"):
                if role in spec:
                    found.append((f"{name}/{role}", spec[role]))
    return found


@pytest.fixture(scope="session")
def helm() -> str:
    if HELM is None:
        skip_or_fail_in_ci("helm not found: run scripts/get-helm.sh (or set $HELM)")
    return HELM
