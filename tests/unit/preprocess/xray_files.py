"""Chest X-ray DICOM made from the dataset's JPEGs (DX, 12-bit, MONOCHROME1/2, window or VOI LUT).

The images come from ``../shared/datasets/chest_xray_pneumonia`` (test split, CC BY 4.0); a
missing dataset skips the test, and fails it under ``CI=true``.
"""

from __future__ import annotations

import functools
import io
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from sightline.ml.data import shared_dataset
from sightline.xray import VOI, Photometric, grey_image, wrap_radiograph
from tests.conftest import skip_or_fail_in_ci

DATASET = shared_dataset("chest_xray_pneumonia")
MODEL = "cxr-pneumonia"


@functools.cache
def _test_rows() -> pd.DataFrame:
    if not (DATASET / "metadata.csv").is_file():
        skip_or_fail_in_ci(f"the chest X-ray dataset is not at {DATASET}")
    meta = pd.read_csv(DATASET / "metadata.csv")
    test = meta[meta["split"] == "test"]
    # Alternate normal and pneumonia, in file order: the same few images on every run.
    normal, pneumonia = test[test["label"] == 0], test[test["label"] == 1]
    return pd.concat([normal.head(4), pneumonia.head(4)]).sort_index(kind="stable").reset_index(drop=True)


def xray_grey(i: int = 0) -> tuple[NDArray[np.uint8], int]:
    """The i-th test image as H x W uint8 grey, and its label (1 = pneumonia)."""
    row = _test_rows().iloc[i]
    return grey_image(DATASET / str(row["image"])), int(row["label"])


def xray_dataset(
    i: int = 0,
    *,
    photometric: Photometric = "MONOCHROME2",
    voi: VOI = "window",
    modality: Literal["DX", "CR"] = "DX",
) -> Dataset:
    """The i-th test image wrapped as a radiograph whose display pipeline gives its grey back."""
    grey, _ = xray_grey(i)
    return wrap_radiograph(grey, photometric=photometric, voi=voi, modality=modality)


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def xray_bytes(
    i: int = 0,
    *,
    photometric: Photometric = "MONOCHROME2",
    voi: VOI = "window",
    modality: Literal["DX", "CR"] = "DX",
) -> bytes:
    return to_bytes(xray_dataset(i, photometric=photometric, voi=voi, modality=modality))
