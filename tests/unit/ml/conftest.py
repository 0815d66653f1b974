"""Fixtures for the model tests: the HAM10000 folder when present, tiny datasets built by code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from sightline.ml.data import dataset_root

REPOSITORY = Path(__file__).resolve().parents[3] / "model_repository"


def _synthetic_image(rng: np.random.Generator, malignant: bool) -> Image.Image:
    """A skin-coloured field with a lesion: light round (benign) or dark, bluish, irregular (malignant)."""
    skin = tuple(int(v) for v in rng.normal([225, 180, 160], 8).clip(0, 255))
    im = Image.new("RGB", (200, 150), skin)
    draw = ImageDraw.Draw(im)
    cx, cy, r = 100 + rng.integers(-15, 15), 75 + rng.integers(-10, 10), rng.integers(25, 45)
    if malignant:
        pts = [
            (cx + r * (0.6 + 0.5 * rng.random()) * np.cos(a), cy + r * (0.6 + 0.5 * rng.random()) * np.sin(a))
            for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)
        ]
        draw.polygon(pts, fill=(70, 50, 90))
        draw.ellipse([cx - 8, cy - 8, cx + 8, cy + 8], fill=(40, 40, 120))
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(170, 120, 90))
    return im


def make_tiny_dataset(
    dest: Path, per_split_label: int = 8, source: Path | None = None, seed: int = 0
) -> Path:
    """A folder in the HAM10000 layout: real images from ``source`` when given, else generated ones."""
    (dest / "images").mkdir(parents=True, exist_ok=True)
    if source is not None:
        meta = pd.read_csv(source / "metadata.csv")
        meta = meta.groupby(["split", "label"], group_keys=False).head(per_split_label).reset_index(drop=True)
        for rel in meta["image"]:
            (dest / rel).write_bytes((source / rel).read_bytes())
        meta.to_csv(dest / "metadata.csv", index=False)
        return dest
    rng = np.random.default_rng(seed)
    rows = []
    sites = ["vidir_modern", "rosendahl"]
    for split in ("train", "val", "test"):
        for label in (0, 1):
            for i in range(per_split_label):
                image_id = f"SYN_{split}_{label}_{i:03d}"
                _synthetic_image(rng, bool(label)).save(dest / "images" / f"{image_id}.jpg", quality=90)
                rows.append(
                    {
                        "image": f"images/{image_id}.jpg",
                        "image_id": image_id,
                        "label": label,
                        "sex": "F" if i % 2 else "M",
                        "age": 30 + 10 * (i % 5),
                        "site": sites[i % 2],
                        "lesion_id": f"LES_{split}_{label}_{i // 2}",
                        "split": split,
                        "width": 200,
                        "height": 150,
                    }
                )
    pd.DataFrame(rows).to_csv(dest / "metadata.csv", index=False)
    return dest


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Real images when the shared dataset is present, generated otherwise (for CI)."""
    root = dataset_root()
    return make_tiny_dataset(tmp_path / "tiny", source=root if (root / "metadata.csv").is_file() else None)


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "synthetic")
