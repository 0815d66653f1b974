"""Sanity checks for saliency maps (Adebayo et al. 2018): maps must depend on the learnt weights.

Run on the committed model when it is trained, and always on a tiny model trained here on
generated images (dark lesion vs plain skin), whose evidence location is known.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.stats import spearmanr
from sightline_explain.core.gradcam import explain_batch
from torch import nn

from tests.conftest import skip_or_fail_in_ci
from tests.unit.explain.conftest import Tiny, input_batch

N_IMAGES = 8


def _randomised(model: nn.Module, seed: int = 123) -> nn.Module:
    """Every layer re-initialised (the last step of the cascading randomisation)."""
    torch.manual_seed(seed)
    rnd = copy.deepcopy(model)
    for m in rnd.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0, 0.1)
    return rnd.eval()


def _rank_correlations(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    out = []
    for x, y in zip(a.numpy(), b.numpy(), strict=True):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(0.0)  # a constant map ranks nothing: no agreement
            continue
        out.append(float(spearmanr(x.ravel(), y.ravel()).statistic))
    return out


def _check(model: nn.Module, x: torch.Tensor) -> list[float]:
    targets = [1] * len(x)
    trained = explain_batch(model, x, targets).heatmaps
    rand = explain_batch(_randomised(model), x, targets).heatmaps
    return _rank_correlations(trained, rand)


def test_tiny_trained_model_points_at_the_lesion(tiny: Tiny) -> None:
    assert tiny.accuracy >= 0.9, "the tiny model did not learn the task; the sanity test would mean nothing"
    heat = explain_batch(tiny.model, tiny.images, [1] * len(tiny.images)).heatmaps.numpy()
    # Pointing game: the peak within a lesion radius (<= 9 px) plus one CAM cell (8 px) of the
    # lesion centre; a peak placed at random would hit about 20% of the time at 64 x 64.
    hits = 0
    for h, (cy, cx) in zip(heat, tiny.centres, strict=True):
        r, c = np.unravel_index(int(h.argmax()), h.shape)
        hits += int(np.hypot(r - cy, c - cx) <= 16)
    assert hits / len(heat) >= 0.8, f"peak on the lesion in only {hits}/{len(heat)} images"


def test_randomised_tiny_model_gives_different_maps(tiny: Tiny) -> None:
    rhos = _check(tiny.model, tiny.images[:N_IMAGES])
    assert float(np.mean(rhos)) < 0.5, rhos


def test_randomised_served_model_gives_different_maps(served: tuple) -> None:
    manifest, model = served
    if manifest.placeholder:
        skip_or_fail_in_ci(
            "the committed model is the random-weight placeholder: 'trained' would mean nothing "
            "(the tiny model trained here covers the check)"
        )
    rhos = _check(model, input_batch(manifest.preprocessing, N_IMAGES))
    assert float(np.mean(rhos)) < 0.5, rhos
