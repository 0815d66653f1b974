"""The committed samples go through the gateway as photographs with their sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from sightline_gateway.core.auth import mint_dev_token
from sightline_gateway.core.ingest import parse_sidecar

from sightline.demo import run_demo
from tests.unit.gateway.gateway_fixtures import REPO, SECRET, harness


def test_samples_have_valid_sidecars_and_readme() -> None:
    images = sorted((REPO / "samples").glob("*.jpg"))
    assert len(images) == 5
    readme = (REPO / "samples" / "README.md").read_text()
    assert "CC BY-NC-SA 4.0" in readme and "Tschandl" in readme
    for image in images:
        assert image.stem in readme
        parse_sidecar(image.with_suffix(".json").read_bytes())


def test_run_demo_returns_the_result_and_saves_the_overlay(tmp_path: Path, monkeypatch) -> None:
    with harness(tmp_path) as h:
        # run_demo uses its own httpx.Client: route it into the in-process app.
        real_client = httpx.Client

        def client(**kw):
            return real_client(transport=h.client._transport, base_url="http://testserver", **kw)

        monkeypatch.setattr(httpx, "Client", client)
        token = mint_dev_token(SECRET, "sightline-dev", "sightline", "demo", ["submitter"], 600)
        sample = sorted((REPO / "samples").glob("*.jpg"))[0]
        out = run_demo("http://testserver", token, sample, out_dir=tmp_path / "out")
    assert out["result"]["status"] == "preliminary"
    assert Path(out["overlay_png"]).read_bytes()[:4] == b"\x89PNG"
    assert json.dumps(out)
