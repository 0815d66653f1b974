"""The dataset loader: layout, lesion-grouped split, the serving path's resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sightline_common.errors import InvalidInput
from sightline_common.imaging import resize
from sightline_common.manifest import PreprocessSpec

from sightline.ml import data as ds

SPEC = PreprocessSpec(
    height=64,
    width=64,
    mean=[0.5] * 3,
    std=[0.2] * 3,
    accepted_modalities=["XC"],
    accepted_sop_classes=["1.2.840.10008.5.1.4.1.1.7"],
)


@pytest.mark.dataset
def test_shared_dataset_has_no_lesion_in_two_splits(ham10000: Path) -> None:
    meta = ds.read_metadata(ham10000)
    assert len(meta) == 9017
    assert meta.groupby("lesion_id")["split"].nunique().max() == 1
    splits = {s: set(meta.loc[meta["split"] == s, "lesion_id"]) for s in ds.SPLITS}
    assert not (splits["train"] & splits["val"]) and not (splits["train"] & splits["test"])
    assert not (splits["val"] & splits["test"])


def test_leaking_split_is_refused(synthetic_dataset: Path) -> None:
    meta = pd.read_csv(synthetic_dataset / "metadata.csv")
    meta.loc[meta["split"] == "test", "lesion_id"] = meta.loc[meta["split"] == "train", "lesion_id"].iloc[0]
    meta.to_csv(synthetic_dataset / "metadata.csv", index=False)
    with pytest.raises(InvalidInput, match="more than one split"):
        ds.read_metadata(synthetic_dataset)


def test_loader_resizes_with_the_serving_path(tiny_dataset: Path, tmp_path: Path) -> None:
    data = ds.load_dataset(tiny_dataset, SPEC, cache_dir=tmp_path / "cache")
    assert data.images.shape == (len(data), 64, 64, 3) and data.images.dtype == np.uint8
    first = ds.decode_rgb(tiny_dataset / data.meta["image"][0])
    np.testing.assert_array_equal(data.images[0], resize(first, SPEC))
    cached = ds.load_dataset(tiny_dataset, SPEC, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(cached.images, data.images)
    assert set(data.meta["split"]) == set(ds.SPLITS)
    train = ds.select(data, ["train"], exclude_sites=["rosendahl"])
    assert set(train.meta["split"]) == {"train"} and "rosendahl" not in set(train.meta["site"])


def test_limit_keeps_both_classes_in_each_split(synthetic_dataset: Path) -> None:
    data = ds.load_dataset(synthetic_dataset, SPEC, limit=2)
    assert data.meta.groupby(["split", "label"]).size().to_dict() == {
        (s, y): 2 for s in ds.SPLITS for y in (0, 1)
    }


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (0, "unknown"),
        (None, "unknown"),
        (15, "0-29"),
        (30, "30-44"),
        (59, "45-59"),
        (60, "60-74"),
        (85, "75+"),
    ],
)
def test_age_bands(age: float | None, band: str) -> None:
    assert ds.age_band(age) == band
