"""Debian's prometheus started as a stack component loads our rules and scrapes its targets."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from sightline.stack import StackSettings, http_ok
from sightline.stack.prometheus import prometheus_component
from tests.conftest import free_ports, skip_or_fail_in_ci


def test_prometheus_component_loads_rules_and_scrapes(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        skip_or_fail_in_ci("prometheus not installed (scripts/get-prometheus.sh)")
    ports = free_ports(10)
    settings = StackSettings(
        data_dir=tmp_path,
        triton_http_port=ports[0],
        triton_grpc_port=ports[1],
        triton_metrics_port=ports[2],
        preprocess_http_port=ports[3],
        preprocess_grpc_port=ports[4],
        deid_port=ports[5],
        explain_port=ports[6],
        gateway_port=ports[7],
    )
    comp = prometheus_component(settings, port=ports[8])
    proc = subprocess.Popen(comp.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not http_ok(comp.ready_url) and time.monotonic() < deadline:
            assert proc.poll() is None, "prometheus exited"
            time.sleep(0.5)
        assert http_ok(comp.ready_url)
        base = comp.listens["http"]
        rules = urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5).read().decode()
        assert "SightlineInputDrift" in rules and "SightlineLatencyBudgetFastBurn" in rules
        deadline = time.monotonic() + 30
        while True:  # the scrape manager starts a moment after readiness
            targets = urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5).read().decode()
            if '"activeTargets":[]' not in targets or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for job in (
            "sightline-gateway",
            "sightline-deid",
            "sightline-preprocess",
            "sightline-explain",
            "triton",
        ):
            assert f'"job":"{job}"' in targets
    finally:
        proc.terminate()
        proc.wait(20)
