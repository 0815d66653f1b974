"""Grad-CAM (Selvaraju et al. 2017) with gradients only down to the target layer.

The network is split at its last convolutional block: the features are computed once without
autograd, then the head runs with autograd on the features alone, so the backward pass
touches only the head (weights frozen). This is exact Grad-CAM for a target layer that is
the last block of ``features``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(model: nn.Module, batch: torch.Tensor, target: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (N, H, W) in [0, 1] at the input size, and the logits (N, 1).

    ``target`` 1 explains the positive (malignant) logit, 0 explains the negative
    (the logit's negation) for a single-logit binary model.
    """
    with torch.no_grad():
        feats = model.features(batch)  # type: ignore[operator]
    feats = feats.detach().requires_grad_(True)
    logits = model.forward_head(feats)  # type: ignore[operator]
    score = logits[:, 0] if target == 1 else -logits[:, 0]
    (grads,) = torch.autograd.grad(score.sum(), feats)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
    cam = torch.where(hi > lo, (cam - lo) / (hi - lo + 1e-12), torch.zeros_like(cam))
    return cam.detach(), logits.detach()
