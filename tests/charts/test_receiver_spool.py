"""The receiver's spool in the chart: a volume at SIGHTLINE_RECEIVER_SPOOL_DIR (an emptyDir, or a claim
that keeps it when the pod goes), and the key from a Secret as the file SIGHTLINE_RECEIVER_SPOOL_KEY_FILE."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from .conftest import CHART, RELEASE, render, run_helm

pytestmark = pytest.mark.charts

RECEIVER = str(CHART / "ci" / "network-policies-values.yaml")  # the value set that enables the receiver
PERSISTENT = ("components.receiver.spool.persistence.enabled=true", "components.receiver.replicas=1")


def _receiver(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(Deployment, pod spec, env by name) of the receiver."""
    deploy = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{RELEASE}-receiver"
    )
    spec = deploy["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in spec["containers"][0]["env"]}
    return deploy, spec, env


def _mounted(spec: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume mount, volume) of the mount that holds ``path``."""
    mounts = spec["containers"][0]["volumeMounts"]
    mount = max(
        (m for m in mounts if PurePosixPath(path).is_relative_to(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    return mount, next(v for v in spec["volumes"] if v["name"] == mount["name"])


def test_the_receiver_spools_to_its_own_volume_and_reads_the_key_from_the_secret() -> None:
    deploy, spec, env = _receiver(render(RECEIVER))
    mount, volume = _mounted(spec, env["SIGHTLINE_RECEIVER_SPOOL_DIR"])
    assert mount["mountPath"] == env["SIGHTLINE_RECEIVER_SPOOL_DIR"] and not mount.get("readOnly")
    assert volume["emptyDir"]["sizeLimit"] == "10Gi"  # default: outlives container restarts, not the pod
    key = env["SIGHTLINE_RECEIVER_SPOOL_KEY_FILE"]
    mount, volume = _mounted(spec, key)
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "sightline-receiver-spool"
    assert volume["secret"]["items"] == [
        {"key": "spool-key", "path": str(PurePosixPath(key).relative_to(mount["mountPath"]))}
    ]
    assert volume["secret"]["defaultMode"] == 0o440
    assert "strategy" not in deploy["spec"]


def test_with_persistence_the_spool_is_a_claim_and_one_receiver_is_replaced_with_recreate() -> None:
    docs = render(RECEIVER, *PERSISTENT, "components.receiver.spool.persistence.storageClassName=fast")
    deploy, spec, env = _receiver(docs)
    _, volume = _mounted(spec, env["SIGHTLINE_RECEIVER_SPOOL_DIR"])
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == claim["metadata"]["name"]
        == f"{RELEASE}-receiver-spool"
    )
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["storageClassName"] == "fast"
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    docs = render(RECEIVER, *PERSISTENT, "components.receiver.spool.persistence.existingClaim=spool-pv")
    _, spec, env = _receiver(docs)
    assert _mounted(spec, env["SIGHTLINE_RECEIVER_SPOOL_DIR"])[1]["persistentVolumeClaim"] == {
        "claimName": "spool-pv"
    }
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]


def test_two_receivers_on_one_spool_claim_are_refused() -> None:
    out = run_helm("template", RELEASE, str(CHART), "-f", RECEIVER, "--set", PERSISTENT[0], check=False)
    assert out.returncode != 0 and "components.receiver.replicas=1" in out.stderr
