"""Our Grad-CAM equals Captum's LayerGradCam on the served model (and batching changes nothing)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from sightline_explain.core.gradcam import explain_batch, normalise_maps
from torch import nn

from tests.unit.explain.conftest import input_batch

TOL = 1e-4


class _TwoLogits(nn.Module):
    """Captum picks a target output column: column t is the score that target t explains."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.cat([-z, z], dim=1)


def _captum(model: nn.Module, x: torch.Tensor, targets: list[int]) -> torch.Tensor:
    gc = LayerGradCam(_TwoLogits(model), model.target_layer)  # type: ignore[arg-type]
    attr = gc.attribute(x, target=targets, relu_attributions=True)
    # Captum stops at the layer's resolution: same upsampling and normalisation as ours.
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return normalise_maps(up.detach(), tuple(x.shape[-2:]))  # identity resize, then min-max


@pytest.mark.parametrize("target", [0, 1])
def test_matches_captum_layergradcam(served: tuple, target: int) -> None:
    manifest, model = served
    x = input_batch(manifest.preprocessing, 6)
    ours = explain_batch(model, x, [target] * len(x)).heatmaps
    theirs = _captum(model, x, [target] * len(x))
    assert ours.shape == theirs.shape == (len(x), manifest.preprocessing.height, manifest.preprocessing.width)
    assert float(ours.amax()) > 0.99, "every map should have a hottest pixel at 1"
    assert torch.allclose(ours, theirs, atol=TOL), float((ours - theirs).abs().max())


def test_mixed_targets_in_one_batch_equal_single_requests(served: tuple) -> None:
    manifest, model = served
    x = input_batch(manifest.preprocessing, 4)
    targets = [1, 0, 0, 1]
    batched = explain_batch(model, x, targets)
    for i, t in enumerate(targets):
        single = explain_batch(model, x[i : i + 1], [t])
        assert torch.allclose(batched.heatmaps[i], single.heatmaps[0], atol=1e-5)
        assert torch.allclose(batched.logits[i], single.logits[0], atol=1e-5)
    assert torch.allclose(batched.logits, model(x)[:, 0], atol=1e-5)


def test_backward_stops_at_the_target_layer(served: tuple) -> None:
    """No gradient flows into the convolutional trunk: only the head is differentiated."""
    manifest, model = served
    reached: list[str] = []
    handles = [
        m.register_full_backward_hook(lambda *_a, n=n: reached.append(n))
        for n, m in model.features.named_children()
    ]
    try:
        explain_batch(model, input_batch(manifest.preprocessing, 2), [1, 1])
    finally:
        for h in handles:
            h.remove()
    assert reached == []
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


def test_grad_cam_plus_plus_is_a_valid_map(served: tuple) -> None:
    manifest, model = served
    x = input_batch(manifest.preprocessing, 3)
    out = explain_batch(model, x, [1, 1, 1], "grad-cam++").heatmaps
    assert out.shape == (3, manifest.preprocessing.height, manifest.preprocessing.width)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 and not torch.isnan(out).any()
