"""Issue 19 through the real inference path: the gateway (in process, in a child interpreter)
calls the real preprocess and tritonserver serving derm-cnn versions 1 and 2 (a byte copy)
from a temporary repository. A canary study's result is scored by version 2 and says so; a
shadowed study's result stays on version 1 while version 2's score lands in shadow_scores.

The gateway runs in a child interpreter because its tritonclient and the KServe protobuf
modules other integration tests import cannot share one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sightline.stack import Stack
from tests.integration.preprocess.test_triton_two_versions import two_version_stack

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration

_GATEWAY = """
import json, sys
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sightline_common.storage import LocalDirStore
from sightline_gateway.app import Dependencies, create_app
from sightline_gateway.clients.services import HttpDeid
from sightline_gateway.db.models import ShadowScore
from sqlalchemy import select

from tests.unit.gateway.gateway_fixtures import FakeExplain, deid_app, phi_dicom, settings, token

tmp, repo, grpc, http = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
policy = json.loads(sys.argv[5])
s = settings(
    tmp, model_repository=repo, preprocess_grpc=grpc, preprocess_http=http,
    model_versions={"*": {"derm-cnn": policy}},
)
store = LocalDirStore(s.storage_dir)
deid = httpx.AsyncClient(transport=httpx.ASGITransport(app=deid_app()), base_url="http://deid")

async def ok():
    return True

deps = Dependencies(
    deid=HttpDeid(deid, "http://deid", 10), explain=FakeExplain(store), store=store, ready_checks={"fake": ok}
)
app = create_app(s, deps)
with TestClient(app) as client:
    r = client.post("/v1/studies", content=phi_dicom(), params={"mode": "sync", "explain": "false"},
                    headers={"Content-Type": "application/dicom", **token()})
    body = r.json()

    async def rows():
        async with app.state.gateway.sessions() as session:
            found = (await session.scalars(select(ShadowScore))).all()
            return [[x.serving_version, x.candidate_version, x.candidate_probability] for x in found]

    print(json.dumps({"status": r.status_code, "body": body, "shadow": client.portal.call(rows)}))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with two_version_stack(tmp_path_factory) as st:
        yield st


def _study(stack: Stack, tmp: Path, policy: dict[str, object]) -> dict[str, object]:
    s = stack.settings
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _GATEWAY,
            str(tmp),
            str(s.model_repository),
            f"127.0.0.1:{s.preprocess_grpc_port}",
            f"http://127.0.0.1:{s.preprocess_http_port}",
            json.dumps(policy),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["status"] == 200, out
    return out


def test_a_canary_study_is_scored_by_version_2_and_names_it(stack: Stack, tmp_path: Path) -> None:
    out = _study(stack, tmp_path, {"candidate": 2, "canary_share": 1.0})
    body = out["body"]
    assert isinstance(body, dict) and body["model"]["version"] == 2
    assert out["shadow"] == []


def test_a_shadowed_study_keeps_version_1_and_version_2_scores_silently(stack: Stack, tmp_path: Path) -> None:
    out = _study(stack, tmp_path, {"candidate": 2, "shadow": True})
    body = out["body"]
    assert isinstance(body, dict) and body["model"]["version"] == 1
    (row,) = out["shadow"]  # type: ignore[misc]
    assert row[:2] == [1, 2]
    assert abs(row[2] - body["probability"]) < 1e-4  # version 2 is version 1's bytes
    assert "shadow" not in json.dumps(body)
