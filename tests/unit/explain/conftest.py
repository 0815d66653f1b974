"""Fixtures for the explanation tests: the served model, a few images, a tiny model trained here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sightline_common.imaging import normalise, resize
from sightline_common.manifest import ModelManifest, PreprocessSpec
from sightline_explain.core.model import load_served_model
from sightline_explain.core.nets import LesionNet
from torch import nn

from tests.unit.explain.explain_fixtures import ROOT, ham_images, load_rgb, synthetic_lesion

REPOSITORY = ROOT / "model_repository"
MODEL = "derm-cnn"


@pytest.fixture(scope="session", autouse=True)
def _lean_torch() -> None:
    torch.set_num_threads(1)  # shared cores: someone may be training


@pytest.fixture(scope="session")
def served() -> tuple[ModelManifest, nn.Module]:
    return load_served_model(REPOSITORY, MODEL)


def input_batch(spec: PreprocessSpec, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` model inputs through the shared preprocessing: HAM10000 images when present, else synthetic."""
    rng = np.random.default_rng(seed)
    paths = ham_images(n)
    rgbs = [load_rgb(p) for p in paths] + [synthetic_lesion(rng)[0] for _ in range(n - len(paths))]
    return torch.from_numpy(np.stack([normalise(resize(rgb, spec), spec) for rgb in rgbs]))


@dataclass(frozen=True)
class Tiny:
    """A small LesionNet trained here to tell a dark planted lesion from plain skin."""

    model: nn.Module
    images: torch.Tensor  # held-out inputs with a lesion (N, 3, S, S)
    centres: list[tuple[int, int]]
    accuracy: float


def _synthetic_set(
    rng: np.random.Generator, n: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    xs, ys, centres = [], [], []
    for i in range(n):
        lesion = bool(i % 2)
        rgb, c = synthetic_lesion(rng, size=size, lesion=lesion)
        x = (rgb.astype(np.float32) / 255.0 - 0.6) / 0.2
        xs.append(x.transpose(2, 0, 1))
        ys.append(float(lesion))
        centres.append(c)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys), centres


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    """Trained for a few hundred steps on generated images (a few seconds on one core), so that
    'trained' means the network has learnt where the evidence is."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size = 64
    x, y, _ = _synthetic_set(rng, 256, size)
    model = LesionNet(widths=(8, 16, 32), dropout=0.0)  # 8x8 CAM at 64x64
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        idx = torch.from_numpy(rng.choice(len(x), 32, replace=False))
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    xt, yt, ct = _synthetic_set(np.random.default_rng(1), 32, size)
    with torch.no_grad():
        acc = float(((model(xt)[:, 0] > 0).float() == yt).float().mean())
    keep = yt == 1
    return Tiny(model, xt[keep], [c for c, k in zip(ct, keep.tolist(), strict=True) if k], acc)
