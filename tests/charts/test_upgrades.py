"""Installs and upgrades that do not stall or race (issue 14, finding 6): migrations run once, as a
hook Job under a PostgreSQL advisory lock, before new gateway pods; Triton's rollout needs no
spare GPU; GPU scheduling settings (runtimeClassName, priorityClassName, topology spread) are
accepted and rendered."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CHART, RELEASE, ROOT, render

pytestmark = pytest.mark.charts

DEFAULT = str(CHART / "ci" / "default-values.yaml")


def _by(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_migrations_run_as_a_pre_install_pre_upgrade_hook_job() -> None:
    docs = render(DEFAULT)
    job = _by(docs, "Job", f"{RELEASE}-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    gateway = _by(docs, "Deployment", f"{RELEASE}-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == gateway["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SIGHTLINE_GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "sightline-database"
    script = _by(docs, "ConfigMap", f"{RELEASE}-migrate")
    assert "pg_advisory_lock" in script["data"]["migrate.py"]
    # The script and its policy exist before the Job (lower hook weight).
    for kind in ("ConfigMap", "NetworkPolicy"):
        other = _by(docs, kind, f"{RELEASE}-migrate")["metadata"]["annotations"]
        assert other["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(other["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])


def test_no_hook_job_with_the_in_chart_database() -> None:
    """The in-chart PostgreSQL does not exist before install: a pre-install Job would wait forever."""
    docs = render(str(CHART / "ci" / "cpu-values.yaml"))
    assert not [d for d in docs if d["kind"] == "Job"]


def test_migration_script_migrates_a_database(tmp_path: Path) -> None:
    """files/migrate.py against SQLite with the gateway's own migrations (the lock is PostgreSQL's)."""
    db = tmp_path / "gateway.db"
    env = {**os.environ, "SIGHTLINE_GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    for _ in range(2):  # idempotent: a second upgrade with no new revision is a no-op
        out = subprocess.run(
            [sys.executable, str(CHART / "files" / "migrate.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=ROOT,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    versions = sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchall()
    heads = sorted(
        p.name.split("_")[0]
        for p in (ROOT / "services/gateway/src/sightline_gateway/alembic/versions").glob("[0-9]*.py")
    )
    assert versions == [(heads[-1],)]


def test_triton_rollout_needs_no_spare_gpu() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"))
    strategy = _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]["strategy"]
    assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxSurge"] in (0, "0%")


def test_gpu_scheduling_settings_render() -> None:
    docs = render(
        DEFAULT,
        "triton.strategy.type=Recreate",
        "triton.strategy.rollingUpdate=null",
        "triton.runtimeClassName=nvidia",
        "triton.priorityClassName=gpu-serving",
        "triton.topologySpreadConstraints[0].maxSkew=1",
        "triton.topologySpreadConstraints[0].topologyKey=kubernetes.io/hostname",
        "triton.topologySpreadConstraints[0].whenUnsatisfiable=DoNotSchedule",
        "defaults.priorityClassName=sightline",
        "components.deid.topologySpreadConstraints[0].maxSkew=1",
        "components.deid.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "components.deid.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
    )
    triton = _by(docs, "Deployment", f"{RELEASE}-triton")["spec"]
    assert triton["strategy"] == {"type": "Recreate"}
    pod = triton["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "gpu-serving"
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    deid = _by(docs, "Deployment", f"{RELEASE}-deid")["spec"]["template"]["spec"]
    assert deid["priorityClassName"] == "sightline"
    assert deid["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
