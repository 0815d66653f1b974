"""Generated inputs for the explanation tests: de-identified RGB DICOM and synthetic lesions.

No identified data: images are drawn by code or read from the HAM10000 folder when present,
and wrapped in a DICOM instance with no patient attributes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sightline.ml.data import dataset_root

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
ROOT = Path(__file__).parents[3]
HAM_IMAGES = dataset_root() / "images"


def dicom_bytes(rgb: NDArray[np.uint8]) -> bytes:
    """A de-identified VL Photographic Image (modality XC, RGB) holding ``rgb``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_PHOTOGRAPHIC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = VL_PHOTOGRAPHIC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "XC"
    ds.PatientIdentityRemoved = "YES"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def synthetic_lesion(
    rng: np.random.Generator, size: int = 160, lesion: bool = True, centre: tuple[int, int] | None = None
) -> tuple[NDArray[np.uint8], tuple[int, int]]:
    """Skin-toned noise with (or without) a dark elliptical 'lesion'; returns the image and centre."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = np.array([200, 150, 130], np.float32) + rng.normal(0, 10, (size, size, 3))
    cy, cx = centre or (
        int(rng.integers(size // 5, 4 * size // 5)),
        int(rng.integers(size // 5, 4 * size // 5)),
    )
    if lesion:
        yy, xx = np.mgrid[:size, :size]
        ry, rx = rng.uniform(size / 12, size / 7, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        img[mask] = np.array([90, 50, 40], np.float32) + rng.normal(0, 8, (int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), (cy, cx)


def ham_images(n: int) -> list[Path]:
    """The first ``n`` HAM10000 images (sorted), or [] when the folder is absent."""
    if not HAM_IMAGES.is_dir():
        return []
    return sorted(HAM_IMAGES.glob("*.jpg"))[:n]


def load_rgb(path: Path, max_side: int = 300) -> NDArray[np.uint8]:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_side, max_side))
        return np.asarray(im)
