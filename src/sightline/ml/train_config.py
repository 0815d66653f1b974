"""The training config: everything a training run depends on, stored with the run and the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Label-preserving augmentation. Dermoscopy has no canonical orientation (flips and 90-degree
    turns); a chest X-ray has one (small rotations only, no colour: it is grey)."""

    model_config = ConfigDict(extra="forbid")

    flips: bool = True
    rot90: bool = True
    rotate_degrees: float = Field(default=0.0, ge=0.0, le=45.0, description="random rotation within +-")
    crop_scale_min: float = Field(default=0.6, gt=0.0, le=1.0, description="random resized crop: min area")
    brightness: float = Field(default=0.1, ge=0.0, lt=1.0)
    contrast: float = Field(default=0.1, ge=0.0, lt=1.0)
    saturation: float = Field(default=0.1, ge=0.0, lt=1.0)


class TaskConfig(BaseModel):
    """What the model predicts, what it accepts and how it is described (manifest and model card).

    The defaults are the dermoscopy reference model's; another model's config states its own.
    """

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = ["benign", "malignant"]
    positive_label: str = "malignant"
    accepted_modalities: list[str] = ["XC", "OT"]
    accepted_sop_classes: list[str] = Field(
        default=["VLPhotographicImageStorage", "SecondaryCaptureImageStorage"],
        description="pydicom.uid keywords of the SOP classes the model accepts",
    )
    accepted_body_parts: list[str] | None = Field(default=None, description="none: any BodyPartExamined")
    accepted_photometric_interpretations: list[str] | None = Field(
        default=None, description="none: any PhotometricInterpretation"
    )
    min_rows: int = Field(default=0, ge=0)
    min_columns: int = Field(default=0, ge=0)
    dataset: str = "HAM10000 (Tschandl et al., Sci Data 5:180161, 2018), doi:10.7910/DVN/DBW86T"
    dataset_licence: str = "CC BY-NC-SA 4.0"
    description: str = "malignant (mel, bcc, akiec) vs benign (nv, bkl, df, vasc)"
    split: str = "fixed lesion-grouped split of metadata.csv (no lesion in two splits)"
    threshold_reason: str = (
        "A missed melanoma costs more than a referral, and every result is reviewed by a clinician."
    )
    intended_use: str | None = Field(default=None, description="none: the dermoscopy model's text")
    limitations: list[str] | None = Field(default=None, description="none: the dermoscopy model's list")
    licence: str | None = Field(default=None, description="none: the dermoscopy model's licence")


class TrainConfig(BaseModel):
    """Everything a training run depends on; stored with the run and in the manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str = "derm-cnn"
    seed: int = 0
    dataset: str | None = Field(
        default=None, description="dataset folder; default SIGHTLINE_DATASET or the shared copy"
    )
    cache_dir: str = ".cache"
    run_dir: str = ".cache/runs/derm-cnn"
    repository: str | None = Field(
        default=None, description="model repository to export into; none: no export"
    )
    input_size: int = Field(default=112, ge=32, le=512)
    resize: Literal["shorter_side_center_crop", "stretch"] = "shorter_side_center_crop"
    colour: Literal["RGB", "MONOCHROME"] = Field(
        default="RGB", description="input channels: RGB (3) or MONOCHROME (1, the image's luma)"
    )
    group_column: str = Field(
        default="lesion_id", description="metadata column grouping images of one lesion or patient"
    )
    subgroup_columns: list[str] = Field(
        default=["site", "sex", "age_band"], description="training counts per group (none: no columns)"
    )
    architecture: dict[str, Any] = {
        "name": "LesionNet",
        "kwargs": {"widths": [32, 64, 128, 256], "dropout": 0.2},
    }
    epochs: int = Field(default=18, ge=1)
    max_minutes: float | None = Field(
        default=None, gt=0, description="compute budget (CPU minutes per thread): fewer epochs if needed"
    )
    max_wall_minutes: float | None = Field(
        default=None, gt=0, description="wall-clock budget on a shared machine: fewer epochs if needed"
    )
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    pos_weight: float | Literal["sqrt", "balanced", "none"] = "sqrt"
    threads: int = Field(default=2, ge=1)
    train_splits: list[str] = ["train"]
    val_split: str = "val"
    exclude_sites: list[str] = []
    limit_per_split: int | None = Field(
        default=None, ge=1, description="first N images per split and label (smoke runs)"
    )
    target_sensitivity: float = Field(default=0.90, gt=0, lt=1)
    sampling: Literal["uniform", "site_label_balanced"] = Field(
        default="uniform",
        description="site_label_balanced: draw training images so that the label does not depend on "
        "the site (weight P(label) / P(label | site), capped), against the site shortcut",
    )
    sampling_max_weight: float = Field(
        default=10.0, ge=1.0, description="cap of a site_label_balanced weight"
    )
    augment: AugmentConfig = AugmentConfig()
    task: TaskConfig = TaskConfig()


def load_config(path: Path, **overrides: Any) -> TrainConfig:
    """A YAML or JSON config file, with keyword overrides (``None`` leaves the file's value)."""
    raw = (
        yaml.safe_load(path.read_text()) if path.suffix in {".yaml", ".yml"} else json.loads(path.read_text())
    )
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.model_validate(raw)
