"""Helpers for routing tests: manifests built in the test, synthetic instances of any modality.

The chest model here is a stand-in built from the derm-cnn manifest with chest routing rules;
it does not need a trained ``cxr-pneumonia`` in the model repository.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
)
from sightline_common.manifest import ModelManifest

from tests.unit.gateway.gateway_fixtures import MODEL_REPOSITORY, phi_dicom

DERM, CHEST = "derm-cnn", "cxr-pneumonia"


def derm_manifest() -> ModelManifest:
    return ModelManifest.model_validate_json((MODEL_REPOSITORY / DERM / "manifest.json").read_bytes())


def chest_manifest(**preprocessing: Any) -> ModelManifest:
    """A chest X-ray model's manifest: DX or CR, chest, monochrome, at least 224 x 224."""
    base = derm_manifest().model_dump()
    base["name"] = CHEST
    rules: dict[str, Any] = {
        "colour": "MONOCHROME",
        "mean": [0.5],
        "std": [0.25],
        "accepted_modalities": ["DX", "CR"],
        "accepted_sop_classes": [
            str(DigitalXRayImageStorageForPresentation),
            str(ComputedRadiographyImageStorage),
        ],
        "accepted_body_parts": ["CHEST"],
        "accepted_photometric_interpretations": ["MONOCHROME1", "MONOCHROME2"],
        "min_rows": 224,
        "min_columns": 224,
    }
    base["preprocessing"].update(rules | preprocessing)
    base["labels"], base["positive_label"] = ["normal", "pneumonia"], "pneumonia"
    return ModelManifest.model_validate(base)


#: A second dermoscopy model: the shipped derm-cnn manifest under another name, so that a
#: photograph is accepted by two models.
DERM_B = "derm-cnn-b"


def derm_copy(name: str = DERM_B) -> ModelManifest:
    return derm_manifest().model_copy(update={"name": name})


def repository(tmp: Path, *manifests: ModelManifest) -> Path:
    """A model repository holding only ``manifests`` (derm-cnn and the chest stand-in by default)."""
    root = tmp / "model_repository"
    for manifest in manifests or (derm_manifest(), chest_manifest()):
        (root / manifest.name).mkdir(parents=True, exist_ok=True)
        (root / manifest.name / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json")))
    return root


def chest_xray(
    modality: str = "DX",
    sop_class: str = str(DigitalXRayImageStorageForPresentation),
    body_part: str | None = "CHEST",
    photometric: str = "MONOCHROME2",
    rows: int = 256,
    columns: int = 256,
    seed: int = 0,
) -> bytes:
    """A monochrome radiograph (with the planted fake PHI of ``phi_dicom``)."""
    ds = dcmread(io.BytesIO(phi_dicom(seed=seed)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.SamplesPerPixel = 1
    del ds.PlanarConfiguration
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = np.random.default_rng(seed).integers(0, 255, (rows, columns), dtype=np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_slice(seed: int = 0) -> bytes:
    """A CT image: a modality neither model accepts."""
    return chest_xray(modality="CT", sop_class=str(CTImageStorage), body_part="CHEST", seed=seed)
