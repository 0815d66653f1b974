"""Dermoscopy dataset in the HAM10000 layout: ``metadata.csv`` plus ``images/``.

Pixels go through the one preprocessing implementation (:mod:`sightline_common.imaging`):
PIL-decoded RGB, then ``resize`` to the model's spec, so training sees what serving sees.
Decoded, resized images are cached as one uint8 array (keyed by the metadata digest, every
image's size and mtime, and the spec) because decoding 9,000 JPEGs costs more than an epoch on
a CPU. Evaluation reads any folder of images with a metadata CSV: only ``image`` and ``label``
are required there; training also needs the HAM10000 columns and its train/val/test split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
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

# Datasets beside a checkout (../shared/datasets/<name>), else the shared machine copies.
_DATASET_DIRS = (
    Path(__file__).resolve().parents[3].parent / "shared" / "datasets",
    Path("/work/shared/datasets"),
)


def shared_dataset(name: str) -> Path:
    """A shared dataset by folder name: beside the checkout if there, else the machine copy."""
    candidates = [d / name for d in _DATASET_DIRS]
    return next((p for p in candidates if (p / "metadata.csv").is_file()), candidates[0])


DEFAULT_DATASET = shared_dataset("ham10000")
REQUIRED_COLUMNS = ("image", "image_id", "label", "sex", "age", "site", "lesion_id", "split")
#: What an evaluation needs; the other columns get defaults (each image its own lesion).
EVALUATION_COLUMNS = ("image", "label")
SPLITS = ("train", "val", "test")
ALL = "all"  # the split name of a folder without a split column
AGE_BANDS = ((0, 30, "0-29"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+"))
STAT_NAMES = DRIFT_STAT_NAMES  # the reference distribution covers what drift compares


def dataset_root(path: str | Path | None = None) -> Path:
    """The dataset folder: the argument (a path, or the name of a shared dataset), else
    ``SIGHTLINE_DATASET``, else ../shared beside the checkout."""
    if path is not None:
        given = Path(path)
        if given.is_dir() or given.is_absolute() or len(given.parts) > 1:
            return given
        shared = shared_dataset(str(path))
        return shared if shared.is_dir() else given
    return Path(os.environ.get("SIGHTLINE_DATASET", str(DEFAULT_DATASET)))


def age_band(age: float | None) -> str:
    """Coarse age band; missing ages and the placeholder 0 are ``unknown``."""
    if age is None or pd.isna(age) or age <= 0:
        return "unknown"
    for lo, hi, name in AGE_BANDS:
        if lo <= age < hi:
            return name
    return "unknown"


def training_columns(group_column: str, subgroup_columns: Sequence[str]) -> tuple[str, ...]:
    """The columns a training run needs: image, label, split, the grouping key and the subgroups'
    source columns (``age_band`` comes from ``age``)."""
    extra = [group_column] + [{"age_band": "age"}.get(c, c) for c in subgroup_columns]
    return ("image", "image_id", "label", "split", *dict.fromkeys(extra))


def read_metadata(
    root: Path,
    *,
    required: Sequence[str] = REQUIRED_COLUMNS,
    metadata: str = "metadata.csv",
    group_column: str = "lesion_id",
) -> pd.DataFrame:
    """Read and check the metadata CSV: required columns, binary labels, grouped split.

    With the training columns required, split names must be train/val/test; with fewer (an
    evaluation), split names are free and missing optional columns get defaults.
    ``group_column`` (a lesion, a patient) becomes ``lesion_id``, the grouping key that splits
    are checked against and bootstraps resample; without it each image is its own group.
    """
    path = root / metadata
    if not path.is_file():
        raise InvalidInput(f"no {metadata} in dataset folder {root}")
    df = pd.read_csv(
        path,
        dtype={"image": str, "sex": str, "site": str, "lesion_id": str, "split": str, group_column: str},
    )
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InvalidInput(
            f"{path} lacks the required column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, df.columns))}); required: {', '.join(required)}"
        )
    labels = pd.to_numeric(df["label"], errors="coerce")
    bad = df.index[~labels.isin([0, 1])]
    if len(bad):
        raise InvalidInput(
            f"{path}: label must be 0 (benign) or 1 (malignant); {len(bad)} row(s) are not, "
            f"first at data row {int(bad[0]) + 1} ({df['label'].iloc[bad[0]]!r})"
        )
    df = df.copy()
    df["label"] = labels.astype(np.int64)
    if "split" in required and not set(df["split"].unique()) <= set(SPLITS):
        raise InvalidInput(f"split must be one of {SPLITS}")
    defaults = {"image_id": df["image"], "sex": "unknown", "age": np.nan, "site": "unknown", "split": ALL}
    for column, default in defaults.items():
        if column not in df.columns:
            df[column] = default
    if group_column != "lesion_id" and group_column in df.columns:
        df["lesion_id"] = df[group_column]
    if "lesion_id" not in df.columns:
        df["lesion_id"] = df["image"]
    df["lesion_id"] = df["lesion_id"].fillna(df["image"])
    df["split"] = df["split"].fillna(ALL)
    check_lesion_split(df)
    df["sex"] = df["sex"].fillna("unknown")
    df["site"] = df["site"].fillna("unknown")
    df["age_band"] = [age_band(a) for a in pd.to_numeric(df["age"], errors="coerce")]
    return df.reset_index(drop=True)


def check_lesion_split(df: pd.DataFrame) -> None:
    """Refuse a split in which one lesion's images fall into two splits (leakage)."""
    per_lesion = df.groupby("lesion_id")["split"].nunique()
    leaking = per_lesion[per_lesion > 1]
    if len(leaking):
        raise InvalidInput(f"{len(leaking)} lesions (or patients) appear in more than one split")


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


def _cache_key(root: Path, meta: pd.DataFrame, metadata: str, spec: PreprocessSpec) -> str:
    """Metadata bytes, each image's path, size and mtime, and the spec: changed pixels miss the cache."""
    digest = hashlib.sha256((root / metadata).read_bytes())
    for rel in meta["image"]:
        st = (root / rel).stat()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(json.dumps([spec.height, spec.width, spec.resize, spec.colour]).encode())
    return digest.hexdigest()[:16]


def _check_images(root: Path, meta: pd.DataFrame) -> None:
    missing = [rel for rel in meta["image"] if not (root / rel).is_file()]
    if missing:
        raise InvalidInput(
            f"{len(missing)} image(s) listed in the metadata are missing under {root}, e.g. {missing[0]}"
        )


def load_dataset(
    root: Path,
    spec: PreprocessSpec,
    *,
    cache_dir: Path | None = None,
    limit: int | None = None,
    required: Sequence[str] = REQUIRED_COLUMNS,
    metadata: str = "metadata.csv",
    advance: Callable[[int], None] | None = None,
    group_column: str = "lesion_id",
) -> DermSet:
    """Decode and resize every image of the folder (or the first ``limit`` per split and label), cached.

    ``advance`` is called once per decoded image (a progress bar's hook).
    """
    meta = read_metadata(root, required=required, metadata=metadata, group_column=group_column)
    if limit is not None:
        # Balanced per split and label so that a tiny subset still has both classes.
        meta = meta.groupby(["split", "label"], group_keys=False).head(limit).reset_index(drop=True)
    _check_images(root, meta)
    cache: Path | None = None
    if cache_dir is not None and limit is None:
        cache = cache_dir / f"dermset-{_cache_key(root, meta, metadata, spec)}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                log.info("loaded %d cached images", len(z["labels"]))
                if advance is not None:
                    advance(len(meta))
                return DermSet(z["images"], z["labels"], meta, z["stats"])
    images = np.empty((len(meta), spec.height, spec.width, 3), np.uint8)
    stats = np.empty((len(meta), len(STAT_NAMES)), np.float32)
    for i, rel in enumerate(meta["image"]):
        rgb = decode_rgb(root / rel)
        s = image_stats(rgb).as_dict()
        stats[i] = [s[k] for k in STAT_NAMES]
        images[i] = resize(rgb, spec)
        if advance is not None:
            advance(1)
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
