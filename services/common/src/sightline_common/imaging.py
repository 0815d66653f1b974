"""From DICOM pixels to the model's input tensor, as the model's manifest declares.

This is the one implementation used by the preprocess service, the explanation service,
training and evaluation, so that the model sees the same pixels everywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sightline_common.errors import InvalidInput, UnprocessableInput
from sightline_common.manifest import PreprocessSpec

MAX_PIXELS = 64 * 1024 * 1024  # rows*cols*frames*samples: refuse absurd sizes before decoding


def read_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes or raise :class:`InvalidInput` with a reason (never a value)."""
    if not data:
        raise InvalidInput("empty body: expected a DICOM Part 10 file")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise InvalidInput("not a DICOM Part 10 file (missing DICM preamble)") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on corrupt input
        raise InvalidInput(f"unreadable DICOM ({type(exc).__name__})") from exc
    return ds


def check_accepted(ds: Dataset, spec: PreprocessSpec) -> None:
    """Refuse a study whose modality or SOP class the model does not accept (422)."""
    modality = str(ds.get("Modality", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality not in spec.accepted_modalities:
        raise UnprocessableInput(
            f"modality {modality or '(none)'} is not accepted by this model",
            accepted_modalities=spec.accepted_modalities,
        )
    if sop_class not in spec.accepted_sop_classes:
        raise UnprocessableInput(
            "SOP class is not accepted by this model", accepted_sop_classes=spec.accepted_sop_classes
        )


def _pixels(ds: Dataset) -> NDArray[np.generic]:
    for keyword in ("Rows", "Columns"):
        if keyword not in ds:
            raise InvalidInput(f"missing required attribute {keyword}")
    if "PixelData" not in ds:
        raise InvalidInput("the instance has no pixel data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise InvalidInput("zero-size image (Rows, Columns or NumberOfFrames is 0)")
    if rows * cols * frames * samples > MAX_PIXELS:
        raise InvalidInput("image dimensions exceed the configured limit")
    try:
        # Convert YBR to RGB on decode; take the first frame of a multi-frame image (stated policy).
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors vary by plugin
        raise InvalidInput(f"pixel data could not be decoded ({type(exc).__name__})") from exc
    if frames > 1:
        arr = arr[0]
    return arr


def to_rgb_uint8(ds: Dataset) -> NDArray[np.uint8]:
    """Decoded pixels as an H x W x 3 uint8 image (grey images are replicated into 3 channels)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = _pixels(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if arr.ndim == 3 and arr.shape[-1] == 3:
        # pydicom's pixel_array already converts YBR_FULL/YBR_FULL_422 to RGB.
        if arr.dtype != np.uint8:
            arr = np.clip(arr / max(1, 2 ** int(ds.BitsStored) - 1) * 255.0, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr)
    if arr.ndim != 2:
        raise InvalidInput(f"unsupported pixel layout with {arr.ndim} dimensions")
    values = apply_modality_lut(arr, ds)
    values = apply_voi_lut(values, ds, index=0)
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    grey = np.round(scaled * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def resize(rgb: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.uint8]:
    """Resize to the model's input size (shorter side then centre crop, or stretch)."""
    image = Image.fromarray(rgb)
    if spec.resize == "stretch":
        return np.asarray(image.resize((spec.width, spec.height), Image.Resampling.BILINEAR))
    h, w = rgb.shape[:2]
    scale = max(spec.height / h, spec.width / w)
    new_w, new_h = max(spec.width, round(w * scale)), max(spec.height, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - spec.width) // 2, (new_h - spec.height) // 2
    return np.asarray(image.crop((left, top, left + spec.width, top + spec.height)))


def normalise(rgb: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.float32]:
    """H x W x 3 uint8 to a 3 x H x W float32 tensor with the manifest's mean and std."""
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass(frozen=True)
class ImageStats:
    """Image statistics for drift monitoring (no pixels, nothing identifying)."""

    brightness: float
    contrast: float
    red: float
    green: float
    blue: float
    sharpness: float
    height: int
    width: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def image_stats(rgb: NDArray[np.uint8]) -> ImageStats:
    """Brightness, contrast, mean colour, sharpness (variance of a Laplacian) and size."""
    f = rgb.astype(np.float32) / 255.0
    grey = f @ np.asarray([0.299, 0.587, 0.114], np.float32)
    lap = (
        -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    )
    means = f.reshape(-1, 3).mean(axis=0)
    return ImageStats(
        brightness=float(grey.mean()),
        contrast=float(grey.std()),
        red=float(means[0]),
        green=float(means[1]),
        blue=float(means[2]),
        sharpness=float(lap.var()) if lap.size else 0.0,
        height=int(rgb.shape[0]),
        width=int(rgb.shape[1]),
    )


def prepare(ds: Dataset, spec: PreprocessSpec) -> tuple[NDArray[np.float32], NDArray[np.uint8], ImageStats]:
    """Check, decode, resize and normalise: the model input, the resized image and its stats."""
    check_accepted(ds, spec)
    rgb = to_rgb_uint8(ds)
    stats = image_stats(rgb)
    resized = resize(rgb, spec)
    return normalise(resized, spec), resized, stats
