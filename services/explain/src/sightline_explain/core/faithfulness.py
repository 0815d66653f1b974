"""Deletion and insertion curves (Petsiuk et al. 2018, RISE) for a heatmap.

Deletion: replace the most-attributed pixels first with a neutral value and follow the
target probability; a faithful map makes it fall fast (low area under the curve).
Insertion: start from a blurred image and restore the most-attributed pixels first; a faithful
map makes the probability rise fast (high area). A random pixel order is the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn


@dataclass(frozen=True)
class Curves:
    """Fractions of pixels changed (steps+1,) and the target probability at each (steps+1,)."""

    fractions: NDArray[np.float64]
    deletion: NDArray[np.float64]
    insertion: NDArray[np.float64]

    @property
    def deletion_auc(self) -> float:
        return auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return auc(self.fractions, self.insertion)


def auc(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def blurred(x: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """A heavily blurred copy (the insertion start: colour kept, structure removed)."""
    k = kernel | 1
    y = x
    for _ in range(3):
        y = F.avg_pool2d(F.pad(y, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return y


def target_probability(
    model: nn.Module, batch: torch.Tensor, target: int, temperature: float = 1.0
) -> torch.Tensor:
    with torch.no_grad():
        z = model(batch)[:, 0] / temperature
    return torch.sigmoid(z if target == 1 else -z)


def curves(
    model: nn.Module,
    x: torch.Tensor,
    order: NDArray[np.int64],
    target: int,
    *,
    steps: int = 20,
    temperature: float = 1.0,
) -> Curves:
    """Deletion and insertion curves of one input ``x`` (3, H, W) for a pixel ``order``
    (flat indices, most important first)."""
    _, h, w = x.shape
    n = h * w
    fractions = np.linspace(0.0, 1.0, steps + 1)
    ranks = np.empty(n, np.int64)
    ranks[order] = np.arange(n)
    rank_map = torch.from_numpy(ranks.reshape(h, w))
    masks = torch.stack([(rank_map < round(f * n)) for f in fractions]).to(x.dtype)[:, None]  # (S, 1, H, W)
    neutral = torch.zeros_like(x)  # zero after normalisation is the training mean colour
    start = blurred(x[None])[0]
    deleted = x[None] * (1 - masks) + neutral[None] * masks
    inserted = start[None] * (1 - masks) + x[None] * masks
    return Curves(
        fractions=fractions,
        deletion=target_probability(model, deleted, target, temperature).double().numpy(),
        insertion=target_probability(model, inserted, target, temperature).double().numpy(),
    )


def heat_order(heat: NDArray[np.floating[Any]], rng: np.random.Generator | None = None) -> NDArray[np.int64]:
    """Flat pixel indices, hottest first (ties broken at random so flat maps are not raster order)."""
    flat = np.asarray(heat, np.float64).ravel()
    jitter = (rng or np.random.default_rng(0)).random(flat.size) * 1e-9
    return np.argsort(-(flat + jitter), kind="stable").astype(np.int64)


def random_order(n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    return rng.permutation(n).astype(np.int64)
