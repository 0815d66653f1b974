"""Dermoscopy dataset in the HAM10000 layout: ``metadata.csv`` plus ``images/``.

Pixels go through the one preprocessing implementation (:mod:`sightline_common.imaging`):
PIL-decoded RGB, then ``resize`` to the model's spec, so training sees what serving sees.
Decoded, resized images are cached as one uint8 array (keyed by the metadata digest and the
spec) because decoding 9,000 JPEGs costs more than an epoch on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from PIL import Image
from sightline_common.errors import InvalidInput
from sightline_common.imaging import DRIFT_STAT_NAMES, image_stats, resize
from sightline_common.manifest import PreprocessSpec

log = logging.getLogger(__name__)

# The copy beside a checkout (../shared/datasets/ham10000), else the shared machine copy.
_CANDIDATES = (
    Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "ham10000",
    Path("/work/shared/datasets/ham10000"),
)
DEFAULT_DATASET = next((p for p in _CANDIDATES if (p / "metadata.csv").is_file()), _CANDIDATES[0])
REQUIRED_COLUMNS = ("image", "image_id", "label", "sex", "age", "site", "lesion_id", "split")
SPLITS = ("train", "val", "test")
AGE_BANDS = ((0, 30, "0-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+"))
STAT_NAMES = DRIFT_STAT_NAMES  # the reference distribution covers what drift compares


def dataset_root(path: str | Path | None = None) -> Path:
    """The dataset folder: the argument, else ``SIGHTLINE_DATASET``, else ../shared beside the checkout."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("SIGHTLINE_DATASET", str(DEFAULT_DATASET)))


def age_band(age: float | None) -> str:
    """Coarse age band; missing ages and the placeholder 0 are ``unknown``."""
    if age is None or pd.isna(age) or age <= 0:
        return "unknown"
    for lo, hi, name in AGE_BANDS:
        if lo <= age < hi:
            return name
    return "unknown"


def read_metadata(root: Path) -> pd.DataFrame:
    """Read and check ``metadata.csv``: required columns, binary labels, lesion-grouped split."""
    path = root / "metadata.csv"
    if not path.is_file():
        raise InvalidInput(f"no metadata.csv in dataset folder {root}")
    df = pd.read_csv(path, dtype={"sex": str, "site": str, "lesion_id": str, "split": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidInput(f"metadata.csv lacks columns {missing}")
    if not set(df["label"].unique()) <= {0, 1}:
        raise InvalidInput("label must be 0 (benign) or 1 (malignant)")
    if not set(df["split"].unique()) <= set(SPLITS):
        raise InvalidInput(f"split must be one of {SPLITS}")
    check_lesion_split(df)
    df = df.copy()
    df["sex"] = df["sex"].fillna("unknown")
    df["age_band"] = [age_band(a) for a in df["age"]]
    return df.reset_index(drop=True)


def check_lesion_split(df: pd.DataFrame) -> None:
    """Refuse a split in which one lesion's images fall into two splits (leakage)."""
    per_lesion = df.groupby("lesion_id")["split"].nunique()
    leaking = per_lesion[per_lesion > 1]
    if len(leaking):
        raise InvalidInput(f"{len(leaking)} lesions appear in more than one split")


@dataclass
class DermSet:
    """Resized images (N x H x W x 3 uint8), labels and the metadata rows, in the same order."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]
    meta: pd.DataFrame
    stats: NDArray[np.float32]  # N x len(STAT_NAMES): image_stats of the decoded, unresized image

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: NDArray[np.bool_]) -> DermSet:
        idx = np.flatnonzero(mask)
        return DermSet(
            self.images[idx], self.labels[idx], self.meta.iloc[idx].reset_index(drop=True), self.stats[idx]
        )


def decode_rgb(path: Path) -> NDArray[np.uint8]:
    """JPEG (or any PIL format) to H x W x 3 uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _cache_key(root: Path, spec: PreprocessSpec) -> str:
    digest = hashlib.sha256((root / "metadata.csv").read_bytes())
    digest.update(json.dumps([spec.height, spec.width, spec.resize, spec.colour]).encode())
    return digest.hexdigest()[:16]


def load_dataset(
    root: Path, spec: PreprocessSpec, *, cache_dir: Path | None = None, limit: int | None = None
) -> DermSet:
    """Decode and resize every image of the folder (or the first ``limit`` per split and label), cached."""
    meta = read_metadata(root)
    if limit is not None:
        # Balanced per split and label so that a tiny subset still has both classes.
        meta = meta.groupby(["split", "label"], group_keys=False).head(limit).reset_index(drop=True)
    cache: Path | None = None
    if cache_dir is not None and limit is None:
        cache = cache_dir / f"dermset-{_cache_key(root, spec)}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                log.info("loaded %d cached images", len(z["labels"]))
                return DermSet(z["images"], z["labels"], meta, z["stats"])
    images = np.empty((len(meta), spec.height, spec.width, 3), np.uint8)
    stats = np.empty((len(meta), len(STAT_NAMES)), np.float32)
    for i, rel in enumerate(meta["image"]):
        rgb = decode_rgb(root / rel)
        s = image_stats(rgb).as_dict()
        stats[i] = [s[k] for k in STAT_NAMES]
        images[i] = resize(rgb, spec)
    labels = meta["label"].to_numpy(np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=labels, stats=stats)
        tmp.replace(cache)
    log.info("decoded %d images", len(labels))
    return DermSet(images, labels, meta, stats)


def select(
    data: DermSet,
    splits: Sequence[str],
    *,
    include_sites: Sequence[str] | None = None,
    exclude_sites: Sequence[str] = (),
) -> DermSet:
    """Rows of the given splits, optionally restricted to or excluding some sites."""
    mask = data.meta["split"].isin(list(splits)).to_numpy()
    if include_sites is not None:
        mask &= data.meta["site"].isin(list(include_sites)).to_numpy()
    if exclude_sites:
        mask &= ~data.meta["site"].isin(list(exclude_sites)).to_numpy()
    return data.subset(mask)
