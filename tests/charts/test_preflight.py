"""The Secret preflight (templates/_validate.tpl) checks every Secret key a pod reads.

`lookup` sees no cluster under `helm template`; test_preflight_cluster.py runs the check against
a fake API server. Here its list: a copy of the chart with one probe template prints it, and it
must equal the non-optional secretKeyRefs of the rendered pods, for every ci value set.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, CI_VALUES, RELEASE, pod_specs, render, run_helm

pytestmark = pytest.mark.charts

PROBE = """apiVersion: v1
kind: ConfigMap
metadata: {name: preflight-probe}
data:
  secrets: |
    {{- include "sightline.requiredSecrets" . | nindent 4 }}
"""


@pytest.fixture(scope="module")
def probed_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("chart") / "sightline"
    shutil.copytree(CHART, copy)
    (copy / "templates" / "zz-preflight-probe.yaml").write_text(PROBE)
    return copy


def _secret_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    refs = set()
    for _, spec in pod_specs(docs):
        for volume in spec.get("volumes", []):  # a Secret key mounted as a file (the receiver's spool key)
            secret = volume.get("secret")
            if secret and not secret.get("optional"):
                refs.update((secret["secretName"], item["key"]) for item in secret.get("items", []))
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    refs.add((ref["name"], ref["key"]))
    return refs


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name for p in CI_VALUES])
def test_preflight_checks_every_secret_the_pods_read(values: Path, probed_chart: Path) -> None:
    out = run_helm(
        "template",
        RELEASE,
        str(probed_chart),
        "-f",
        str(values),
        "--show-only",
        "templates/zz-preflight-probe.yaml",
    ).stdout
    listed = {tuple(line.split()[:2]) for line in yaml.safe_load(out)["data"]["secrets"].splitlines() if line}
    assert listed == _secret_refs(render(str(values)))


def test_preflight_is_skipped_without_a_cluster() -> None:
    """None of the Secrets exist here, and `helm template` still renders."""
    assert render(str(CHART / "ci" / "default-values.yaml"))
