"""The Grad-CAM heatmap as a DICOM Segmentation (FRACTIONAL) a PACS viewer can overlay.

Marked as AI-generated: the segment's algorithm is the model (AI family, name and version), the
equipment names the model and its sha256, and the series description says it is assistive.
Built from the de-identified image, so it carries no identity of its own.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

HEATMAP_SERIES_NUMBER = 901


def _fit(heatmap: npt.ArrayLike, rows: int, cols: int) -> npt.NDArray[np.float32]:
    """The heatmap in [0, 1], resized to the image (the model saw a resized/cropped image)."""
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32).squeeze(), nan=0.0)
    if heat.ndim != 2:
        raise ValueError("a heatmap is one 2-D map")
    heat = np.clip(heat, 0.0, 1.0)
    if heat.shape != (rows, cols):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize((cols, rows), Image.Resampling.BILINEAR))
    return np.clip(heat, 0.0, 1.0).astype(np.float32)


def heatmap_segmentation(
    *, result: Any, source: bytes, heatmap_npy: bytes, series_uid: str, sop_instance_uid: str
) -> bytes:
    """A FRACTIONAL Segmentation of the de-identified ``source`` image holding the heatmap (.npy)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    image = pydicom.dcmread(io.BytesIO(source))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{result.model_name} Grad-CAM",
        family=codes.cid7162.ArtificialIntelligence,
        version=str(result.model_version),
        source=f"sha256:{result.model_sha256}"[:64],
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Grad-CAM relevance (AI-generated)",
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical structure"),
        segmented_property_type=hd.sr.CodedConcept("52988006", "SCT", "Lesion"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=[image],
        pixel_array=_fit(
            np.load(io.BytesIO(heatmap_npy), allow_pickle=False), int(image.Rows), int(image.Columns)
        ),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[segment],
        series_instance_uid=series_uid,
        series_number=HEATMAP_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="Sightline",
        manufacturer_model_name=str(result.model_name)[:64],
        software_versions=f"{result.model_name} v{result.model_version}"[:64],
        device_serial_number=str(result.model_sha256 or "unknown")[:64],
        series_description="AI-generated Grad-CAM heatmap; assistive, needs clinician review",
        content_label="GRADCAM",
        content_description="AI-generated explanation heatmap"[:64],
    )
    # General Image: Type 2C for an image without patient geometry (a photograph): present, may be empty.
    seg.PatientOrientation = image.get("PatientOrientation", "")
    out = io.BytesIO()
    seg.save_as(out)
    return out.getvalue()
