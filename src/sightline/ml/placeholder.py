"""Manifest fields of a placeholder model (the reference architecture, random weights).

The first serving path ran on such a model before the trained one existed; tests still export
one to check the exporter. A manifest with ``placeholder: true`` is reported by every service.
"""

from __future__ import annotations

from typing import Any

from pydicom.uid import SecondaryCaptureImageStorage, VLPhotographicImageStorage

MODEL_NAME = "derm-cnn"

DERMOSCOPY_PREPROCESSING: dict[str, Any] = {
    "height": 128,
    "width": 128,
    "resize": "shorter_side_center_crop",
    "colour": "RGB",
    "mean": [0.763, 0.546, 0.570],
    "std": [0.141, 0.153, 0.170],
    "accepted_modalities": ["XC", "OT"],
    "accepted_sop_classes": [str(VLPhotographicImageStorage), str(SecondaryCaptureImageStorage)],
}

ARCHITECTURE: dict[str, Any] = {"name": "LesionNet", "kwargs": {"widths": [32, 64, 128, 192], "dropout": 0.2}}


def placeholder_fields() -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "placeholder": True,
        "architecture": ARCHITECTURE,
        "preprocessing": DERMOSCOPY_PREPROCESSING,
        "labels": ["benign", "malignant"],
        "positive_label": "malignant",
        "threshold": 0.5,
        "threshold_rationale": "placeholder: untrained weights, no operating point",
        "temperature": 1.0,
        "intended_use": "PLACEHOLDER with random weights for exercising the serving path; not for any use.",
        "limitations": ["Untrained: its outputs carry no information."],
        "licence": "Apache-2.0 (random weights)",
    }
