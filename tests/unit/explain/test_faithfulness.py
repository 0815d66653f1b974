"""Deletion/insertion curves: a faithful map beats a random order on a model whose evidence is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sightline_explain.core.faithfulness import curves, heat_order, random_order
from sightline_explain.core.gradcam import explain_batch
from sightline_explain.report import main

from tests.unit.explain.conftest import MODEL, REPOSITORY, Tiny
from tests.unit.explain.explain_fixtures import synthetic_lesion


def test_grad_cam_order_beats_random_on_the_tiny_model(tiny: Tiny) -> None:
    rng = np.random.default_rng(0)
    x = tiny.images[:6]
    heat = explain_batch(tiny.model, x, [1] * len(x)).heatmaps.numpy()
    cam_del, rnd_del, cam_ins, rnd_ins = [], [], [], []
    for xi, hi in zip(x, heat, strict=True):
        c = curves(tiny.model, xi, heat_order(hi, rng), 1, steps=10)
        r = curves(tiny.model, xi, random_order(hi.size, rng), 1, steps=10)
        assert c.fractions[0] == 0.0 and c.fractions[-1] == 1.0
        assert abs(c.deletion[0] - c.insertion[-1]) < 1e-6, "both curves meet at the intact image"
        cam_del.append(c.deletion_auc)
        rnd_del.append(r.deletion_auc)
        cam_ins.append(c.insertion_auc)
        rnd_ins.append(r.insertion_auc)
    assert np.mean(cam_del) < np.mean(rnd_del)
    assert np.mean(cam_ins) > np.mean(rnd_ins)


def test_report_command_writes_the_figure(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(synthetic_lesion(rng)[0]).save(images / f"img{i}.png")
    out = tmp_path / "report"
    rc = main(
        [
            "deletion",
            "--out",
            str(out),
            "--images",
            str(images),
            "--repository",
            str(REPOSITORY),
            "--model",
            MODEL,
            "--steps",
            "4",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    assert (out / "deletion_insertion.png").stat().st_size > 10_000
    assert '"images": 2' in (out / "deletion_insertion.json").read_text()
