"""The real tritonserver exports the nv_* families the dashboards and rules rely on."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from sightline.stack import Stack, StackSettings
from tests.conftest import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NAMES = Path(__file__).resolve().parents[2] / "unit" / "observability" / "triton_metric_names.txt"
#: The model inferred on (one of the repository's; the stack's Triton loads every model).
MODEL = "derm-cnn"


def test_triton_exports_the_listed_metric_families(tmp_path: Path, repo_root: Path) -> None:
    p = free_ports(8)
    settings = StackSettings(
        data_dir=tmp_path,
        model_repository=repo_root / "model_repository",
        triton_http_port=p[0],
        triton_grpc_port=p[1],
        triton_metrics_port=p[2],
        preprocess_http_port=p[3],
        preprocess_grpc_port=p[4],
        deid_port=p[5],
        explain_port=p[6],
        gateway_port=p[7],
    )
    stack = Stack(settings)
    state = stack.start(only=["triton"])
    try:
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1, 3, 112, 112],
                        "datatype": "FP32",
                        "data": [0.0] * (3 * 112 * 112),
                    }
                ]
            }
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{p[0]}/v2/models/{MODEL}/infer",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(req, timeout=60).status == 200
        # The model's series appear once tritonserver has published the request (asynchronously:
        # one scrape right after the response had none of them on a loaded machine).
        counted = f'nv_inference_count{{model="{MODEL}",version="1"}} 1'
        deadline = time.monotonic() + 30
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{p[2]}/metrics", timeout=10).read().decode()
            if counted in text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        stack.stop(state)
    scraped = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    listed = {ln.split()[0] for ln in NAMES.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    assert listed <= scraped, f"listed but not exported by tritonserver: {sorted(listed - scraped)}"
    assert counted in text
