"""The federated training config: the central recipe plus who takes part and how updates combine.

A federated run trains the same network with the same preprocessing, loss and augmentation as a
central one (:class:`~sightline.ml.train_config.TrainConfig`); ``epochs`` is each site's local
passes over its own rows per round. What is added: the sites (one Flower client each), the rounds,
the aggregation (FedAvg, or FedProx with its proximal ``mu``), how clients are weighted, and
optional differential privacy (client-side clipping, server-side Gaussian noise).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sightline.ml.train_config import TrainConfig

HAM10000_SITES = ["rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"]

#: How the server weights each site's update: its training images (FedAvg's default), its
#: malignant images (a site with 18 positives counts for little), or every site alike.
Weighting = Literal["num-examples", "num-positives", "uniform"]


class PrivacyConfig(BaseModel):
    """Central DP with client-side fixed clipping (Flower's ``fixedclipping_mod`` and
    ``DifferentialPrivacyClientSideFixedClipping``): each site clips its update to
    ``clipping_norm``; the server adds N(0, (noise_multiplier * clipping_norm / sites)^2) to the mean.
    The guarantee is per site (a whole hospital's participation), not per image."""

    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(ge=0, description="0: clipping only (no privacy: epsilon infinite)")
    clipping_norm: float = Field(default=1.0, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)


class FederatedConfig(TrainConfig):
    """A federated training run (``sightline federated train``)."""

    name: str = "derm-cnn-federated"
    run_dir: str = ".cache/runs/derm-cnn-federated"
    epochs: int = Field(default=1, ge=1, description="local epochs per round at each site")
    sites: list[str] = Field(default_factory=lambda: list(HAM10000_SITES), min_length=1)
    rounds: int = Field(default=20, ge=1)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(default=0.0, ge=0, description="FedProx: weight of ||w - w_global||^2 / 2")
    weighting: Weighting = "num-examples"
    privacy: PrivacyConfig | None = None
    min_site_images: int = Field(default=1, ge=1, description="a site with fewer training images is refused")
    engine: Literal["inprocess", "ray"] = Field(
        default="inprocess",
        description="simulation transport: ClientApps called in this process (metered bytes), or "
        "Flower's Ray simulation engine (one actor per client; no byte meter)",
    )


def load_federated_config(path: Path, **overrides: Any) -> FederatedConfig:
    """A YAML or JSON federated config, with keyword overrides (``None`` leaves the file's value)."""
    raw = (
        yaml.safe_load(path.read_text()) if path.suffix in {".yaml", ".yml"} else json.loads(path.read_text())
    )
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return FederatedConfig.model_validate(raw)


def epsilon_spent(noise_multiplier: float, rounds: int, delta: float) -> float:
    """(epsilon, delta) after ``rounds`` Gaussian releases of a sum with sensitivity C and noise z*C.

    Every site takes part in every round (no sampling amplification), so each release is
    1/(2 z^2)-zCDP; zCDP composes additively and converts as eps = rho + 2 sqrt(rho ln(1/delta))
    (Bun and Steinke 2016, Prop. 1.3). Flower's own accountant needs the optional
    ``dp-accounting`` package, which this workspace does not install.
    """
    if noise_multiplier == 0:
        return math.inf
    rho = rounds / (2.0 * noise_multiplier**2)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
