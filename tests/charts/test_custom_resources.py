"""KEDA and Prometheus Operator custom resources validated against their CRD schemas
(tests/charts/crds: pinned validators generated from the CRDs), for every ci value set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail_in_ci

from .conftest import CHART, CI_VALUES, ROOT, render

pytestmark = pytest.mark.charts

CRDS = Path(__file__).parent / "crds"
MODELS = Path(os.environ.get("CRD_MODELS", ROOT / ".cache" / "crd-validators"))
KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


def _validate(docs: list[dict]) -> list[str]:
    node = shutil.which("node")
    if node is None or not (MODELS / "node_modules" / "@kubernetes-models").is_dir():
        skip_or_fail_in_ci("CRD validators not installed: run scripts/get-crd-validators.sh (needs node)")
    out = subprocess.run(
        [node, str(CRDS / "validate.mjs")],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CRD_MODELS": str(MODELS)},
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def test_custom_resources_match_their_crds(values: Path) -> None:
    docs = [d for d in render(str(values), "triton.autoscaling.enabled=true") if d["kind"] in KINDS]
    errors = _validate(docs)
    assert not errors, "\n".join(errors)


def test_the_validators_catch_a_broken_resource() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["minReplicaCount"] = "one"
    del broken["spec"]["triggers"][0]["type"]
    errors = _validate([scaled, broken])
    assert len(errors) == 1 and "minReplicaCount" in errors[0], errors
