"""What training shows the network: which images each epoch draws, and how each is altered.

Split from ``train.py`` along that seam: the federated client draws and augments the same way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sightline_common.imaging import LUMA, channels
from sightline_common.manifest import PreprocessSpec

from sightline.ml.train_config import AugmentConfig


def augment_batch(
    batch: torch.Tensor, spec: PreprocessSpec, cfg: AugmentConfig, gen: torch.Generator
) -> torch.Tensor:
    """uint8 N x H x W x 3 to a normalised float N x C x H x W batch with random augmentation.

    Flips, 90-degree turns, small rotations and a random resized crop are one affine resampling
    per image; colour jitter scales brightness, contrast and saturation by small factors. A
    MONOCHROME spec gets the luma channel (as ``normalise`` does) and no saturation jitter.
    """
    n = batch.shape[0]
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    k = torch.randint(0, 4 if cfg.rot90 else 1, (n,), generator=gen)
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
    if cfg.rotate_degrees:
        a = math.radians(cfg.rotate_degrees) * (2 * torch.rand(n, generator=gen) - 1)
        cos, sin = cos * torch.cos(a) - sin * torch.sin(a), sin * torch.cos(a) + cos * torch.sin(a)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if cfg.flips else torch.ones(n)
    area = cfg.crop_scale_min + (1 - cfg.crop_scale_min) * torch.rand(n, generator=gen)
    log_ratio = (torch.rand(n, generator=gen) - 0.5) * 2 * math.log(4 / 3)
    sx = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(n, generator=gen) - 1)
    ty = (1 - sy) * (2 * torch.rand(n, generator=gen) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def factor(amount: float) -> torch.Tensor:
        return (
            (1 + amount * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1))
            if amount
            else torch.ones(n, 1, 1, 1)
        )

    x = x * factor(cfg.brightness)
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    grey = (x * luma).sum(1, keepdim=True)
    x = grey.mean((2, 3), keepdim=True) + (x - grey.mean((2, 3), keepdim=True)) * factor(cfg.contrast)
    grey = (x * luma).sum(1, keepdim=True)
    x = grey if spec.colour == "MONOCHROME" else grey + (x - grey) * factor(cfg.saturation)
    x = x.clamp_(0, 1)
    c = channels(spec)
    mean = torch.tensor(spec.mean).view(1, c, 1, 1)
    std = torch.tensor(spec.std).view(1, c, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def site_label_weights(
    sites: NDArray[Any], labels: NDArray[np.int64], max_weight: float
) -> NDArray[np.float64]:
    """Per-image draw weights P(label) / P(label | site), capped at ``max_weight`` and
    normalised to mean 1: in the drawn stream a site no longer predicts the label (HAM10000's
    sites range from 1% to 41% malignant), while the overall label balance stays as it was."""
    weights = np.ones(len(labels), dtype=np.float64)
    prior = {y: float((labels == y).mean()) for y in (0, 1)}
    for site in np.unique(sites):
        at = sites == site
        for y in (0, 1):
            cell = at & (labels == y)
            if cell.any():
                weights[cell] = min(max_weight, prior[y] / float(cell.sum() / at.sum()))
    normalised: NDArray[np.float64] = weights / weights.mean()
    return normalised
