"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018), batched.

The Grad-CAM target layer is named by the manifest's ``architecture.target_layer`` (default:
the last block of ``features``). At that layer the network is split: the
features are computed once without autograd, then only the head runs with autograd on the
features, so the backward pass touches the head alone (weights frozen, gradients taken with
``torch.autograd.grad`` with respect to the feature map only). This is exact Grad-CAM for that
layer, at the cost of one forward pass plus a backward through pooling and one linear layer.

Targets are per item, so requests for different classes share one batch: for a single-logit
binary model, target 1 explains the logit and target 0 its negation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["grad-cam", "grad-cam++"]


@dataclass(frozen=True)
class CamBatch:
    """Heatmaps (N, H, W) in [0, 1] at the input size, the raw (unnormalised, pre-upsampling)
    maps (N, h, w) and the logits (N,)."""

    heatmaps: torch.Tensor
    raw: torch.Tensor
    logits: torch.Tensor


def _signed_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    z = logits[:, 0]
    return torch.where(targets == 1, z, -z)


def normalise_maps(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU'd (N, 1, h, w) maps to (N, H, W) in [0, 1]: bilinear upsampling, then per-map min-max
    (a constant map becomes all zeros: there is nothing to show)."""
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    return torch.where(hi > lo, (cam - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(cam))


def _split_at_features(model: nn.Module, target_layer: str | None) -> bool:
    """True when the target layer's output is ``model.features``' (the fast, head-only backward)."""
    if not hasattr(model, "features") or not hasattr(model, "forward_head"):
        return False
    if target_layer is None:
        return True
    layer = model.get_submodule(target_layer)
    features = model.get_submodule("features")
    last = features[-1] if isinstance(features, nn.Sequential) and len(features) else features
    return layer is features or layer is last


def _features_and_grads(
    model: nn.Module, batch: torch.Tensor, t: torch.Tensor, target_layer: str | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The target layer's activations, the score's gradients with respect to them, and the logits."""
    if _split_at_features(model, target_layer):
        with torch.no_grad():
            feats = model.features(batch)  # type: ignore[operator]
        feats = feats.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(feats)  # type: ignore[operator]
            score = _signed_scores(logits, t)
            # Items are independent (eval mode), so the gradient of the sum is each item's gradient.
            (grads,) = torch.autograd.grad(score.sum(), feats)
        return feats.detach(), grads, logits
    # Any other layer (a module path such as ``features.2``): a forward hook keeps its output and
    # the whole network runs with autograd on the input (the weights stay frozen).
    assert target_layer is not None
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(target_layer).register_forward_hook(
        lambda _module, _inputs, output: captured.append(output)
    )
    try:
        with torch.enable_grad():
            logits = model(batch.detach().requires_grad_(True))
            score = _signed_scores(logits, t)
            (grads,) = torch.autograd.grad(score.sum(), captured[-1])
    finally:
        handle.remove()
    return captured[-1].detach(), grads, logits


def explain_batch(
    model: nn.Module,
    batch: torch.Tensor,
    targets: Sequence[int] | torch.Tensor,
    method: Method = "grad-cam",
    target_layer: str | None = None,
) -> CamBatch:
    """CAMs of ``batch`` (N, C, H, W) for one target class per item, at ``target_layer`` (a
    module path from the manifest's ``architecture``; none: the output of ``features``)."""
    t = torch.as_tensor(targets, dtype=torch.long, device=batch.device)
    if t.shape != (batch.shape[0],):
        raise ValueError("one target per item is required")
    feats, grads, logits = _features_and_grads(model, batch, t, target_layer)
    if method == "grad-cam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    elif method == "grad-cam++":
        # Closed form of Chattopadhay et al. (eq. 19) with the exponential score, as usually done.
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + feats.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(
            grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2)
        )
        weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
    else:
        raise ValueError(f"unknown CAM method {method!r}")
    raw = F.relu((weights * feats).sum(dim=1, keepdim=True))
    heatmaps = normalise_maps(raw, (batch.shape[-2], batch.shape[-1]))
    return CamBatch(heatmaps=heatmaps, raw=raw[:, 0], logits=logits.detach()[:, 0])


def grad_cam(model: nn.Module, batch: torch.Tensor, target: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] and logits (N, 1), one target for the whole batch."""
    out = explain_batch(model, batch, [target] * batch.shape[0])
    return out.heatmaps, out.logits[:, None]
