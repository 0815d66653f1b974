"""De-identified DICOM bytes to model input batches (pure; no web or gRPC imports)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sightline_common.errors import PayloadTooLarge
from sightline_common.imaging import IMAGE_STAT_NAMES, ImageStats, prepare, read_dicom
from sightline_common.manifest import PreprocessSpec

STAT_FIELDS = IMAGE_STAT_NAMES


def transform_batch(
    items: list[bytes], spec: PreprocessSpec, max_bytes: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Decode each DICOM instance; return the input batch (N,C,H,W) and stats (N, len(STAT_FIELDS))."""
    tensors: list[NDArray[np.float32]] = []
    stats: list[ImageStats] = []
    for data in items:
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"DICOM instance exceeds {max_bytes} bytes")
        x, _, st = prepare(read_dicom(data), spec)
        tensors.append(x)
        stats.append(st)
    table = np.asarray([[getattr(s, f) for f in STAT_FIELDS] for s in stats], dtype=np.float32)
    return np.stack(tensors), table
