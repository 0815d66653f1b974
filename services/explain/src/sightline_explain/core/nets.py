"""Model architectures, in plain torch (no torchvision: it does not install beside the CPU torch).

The architecture is recorded in the manifest (``architecture``) so that training, export and
the explanation service build the same network from the same description.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a projected shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        out: torch.Tensor = self.act(y + self.shortcut(x))
        return out


class ShadesOfGray(nn.Module):
    """Colour constancy inside the network (Finlayson & Trezzi 2004, as ISIC entries used it).

    The input is the served, normalised tensor; it is mapped back to [0, 1] intensities, each
    image's illuminant is estimated per channel as the Minkowski p-norm mean, the image is divided
    by it (a grey illuminant changes nothing) and normalised again. Being part of the graph, it is
    the same function in training, ONNX/Triton and Grad-CAM.
    """

    mean: torch.Tensor  # buffers, (1, C, 1, 1)
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float], p: float = 6.0) -> None:
        super().__init__()
        self.p = float(p)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = (x * self.std + self.mean).clamp(min=0.0, max=1.0)
        illuminant = (raw.pow(self.p).mean(dim=(2, 3), keepdim=True) + 1e-12).pow(1.0 / self.p)
        grey = illuminant.mean(dim=1, keepdim=True)
        balanced = (raw * (grey / (illuminant + 1e-6))).clamp(max=1.0)
        out: torch.Tensor = (balanced - self.mean) / self.std
        return out


class LesionNet(nn.Module):
    """A small residual CNN, trainable from scratch on a CPU (dermoscopy RGB, or one channel for X-rays).

    ``features`` ends in the last convolutional block (the Grad-CAM target layer,
    ``target_layer``); the head is global average pooling and one logit (malignant).
    ``colour_constancy`` ({"p", "mean", "std"}) puts Shades of Gray in front of the stem, as the
    first stage of ``features``.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        dropout: float = 0.2,
        in_channels: int = 3,
        colour_constancy: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = [ResidualBlock(a, b, 2) for a, b in itertools.pairwise(widths)]
        # Without colour constancy the stem stays features.0 (the checkpoints of version 1).
        colour = (
            [ShadesOfGray(colour_constancy["mean"], colour_constancy["std"], colour_constancy.get("p", 6.0))]
            if colour_constancy is not None
            else []
        )
        self.features = nn.Sequential(*colour, stem, *blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], 1)

    @property
    def target_layer(self) -> nn.Module:
        return self.features[-1]

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.dropout(torch.flatten(self.pool(feats), 1)))
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (N, 1)."""
        return self.forward_head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {"LesionNet": LesionNet}


def build_model(architecture: dict[str, Any]) -> nn.Module:
    """Build a network from a manifest's ``architecture`` entry ({"name": ..., "kwargs": {...}})."""
    cls = ARCHITECTURES[architecture["name"]]
    kwargs = dict(architecture.get("kwargs", {}))
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return cls(**kwargs)


def load_checkpoint(path: str, architecture: dict[str, Any]) -> nn.Module:
    """Load ``model.pt`` (a state dict, read with ``weights_only=True``) into an eval-mode network."""
    model = build_model(architecture)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
