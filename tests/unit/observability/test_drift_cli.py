"""``sightline drift report`` reads an observations file and draws reference vs current."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sightline_common.drift import DriftMonitor, Reference
from sightline_common.manifest import load_manifest
from typer.testing import CliRunner

from sightline.drift_cli import drift_app

from .conftest import ROOT


def test_report_flags_a_darker_site_and_draws_png(tmp_path: Path) -> None:
    manifest = load_manifest(ROOT / "model_repository", "derm-cnn")
    obs = tmp_path / "obs.jsonl"
    monitor = DriftMonitor(window=200, min_count=50, observations_file=obs)
    monitor.register(manifest)
    ref = Reference.from_manifest(manifest).features
    rng = np.random.default_rng(0)
    for i in range(150):
        # Values drawn from the reference (inverse CDF), then 30% darker at "site_b".
        u = rng.uniform(0.01, 0.99)
        stats = {k: float(np.interp(u, f.cdf_p, f.cdf_x)) for k, f in ref.items() if k != "score"}
        site = "site_b" if i % 2 else "site_a"
        if site == "site_b":
            stats["brightness"] *= 0.6
        score = float(np.interp(rng.uniform(), ref["score"].cdf_p, ref["score"].cdf_x))
        monitor.observe(manifest.name, manifest.version, stats, score, manifest.decision(score), segment=site)
    out = tmp_path / "report.png"
    args = [
        "--observations",
        str(obs),
        "--out",
        str(out),
        "--model-repository",
        str(ROOT / "model_repository"),
    ]
    result = CliRunner().invoke(drift_app, ["report", *args, "--segment", "site_b"])
    assert result.exit_code == 0, result.output
    brightness = next(line for line in result.output.splitlines() if "brightness" in line)
    assert "DRIFT" in brightness
    with Image.open(out) as png:
        assert png.size[0] > 300
    ok = CliRunner().invoke(drift_app, ["report", *args, "--segment", "site_a"])
    assert ok.exit_code == 0
    assert "DRIFT" not in next(ln for ln in ok.output.splitlines() if "brightness" in ln)
    missing = CliRunner().invoke(drift_app, ["report", *args, "--segment", "nowhere"])
    assert missing.exit_code == 1
