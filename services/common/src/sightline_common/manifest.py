"""The model manifest: what a model version is, what it accepts, how it was evaluated.

``model_repository/<model>/manifest.json`` is the single source of the preprocessing spec,
labels, operating threshold, calibration temperature and artifact digests. Tensor names,
types and shapes are *not* here: they live only in ``config.pbtxt``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sightline_common.errors import IntegrityError, NotFound


class PreprocessSpec(BaseModel):
    """How pixels become the model's input tensor."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    resize: Literal["shorter_side_center_crop", "stretch"] = "shorter_side_center_crop"
    colour: Literal["RGB", "MONOCHROME"] = "RGB"
    mean: list[float]
    std: list[float]
    accepted_modalities: list[str]
    accepted_sop_classes: list[str]
    # Routing criteria beyond modality and SOP class; the defaults accept any value, so a
    # manifest written before they existed keeps its meaning.
    accepted_body_parts: list[str] | None = Field(
        default=None, description="BodyPartExamined values accepted; None accepts any"
    )
    accepted_photometric_interpretations: list[str] | None = Field(
        default=None, description="PhotometricInterpretation values accepted; None accepts any"
    )
    min_rows: int = Field(default=0, ge=0, description="smallest Rows accepted")
    min_columns: int = Field(default=0, ge=0, description="smallest Columns accepted")


class OutOfScopeSpec(BaseModel):
    """How a model version says an image is unlike its training data (the out-of-scope flag).

    The score is computed inside the served graph (a second output beside the logit, so Triton,
    evaluation and every backend run one function); ``artifact`` holds the fitted statistics it
    was built from. A score above ``threshold`` flags the image: its probability is not one the
    model's evaluation vouches for, whatever its value.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="what the score is, in words")
    artifact: str = Field(description="fitted statistics, relative to the model folder (in artifacts)")
    threshold: float = Field(gt=0.0, description="a score above this flags the image")
    threshold_rationale: str = ""
    fitted_on: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)

    def flagged(self, score: float) -> bool:
        """True when the image is out of scope (a missing or non-finite score flags too)."""
        return not math.isfinite(score) or score > self.threshold


class ModelManifest(BaseModel):
    """What a model version is; written by export, read by every service that touches it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    version: int = Field(ge=1)
    placeholder: bool = False
    architecture: dict[str, Any]
    artifacts: dict[str, str] = Field(description="relative path -> sha256 hex digest")
    preprocessing: PreprocessSpec
    labels: list[str]
    positive_label: str
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_rationale: str = ""
    temperature: float = Field(gt=0.0)
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    reference_distribution: dict[str, Any] = Field(default_factory=dict)
    out_of_scope: OutOfScopeSpec | None = None
    intended_use: str
    limitations: list[str]
    licence: str

    def calibrated_probability(self, logit: float) -> float:
        """Temperature-scaled probability of the positive label."""
        z = logit / self.temperature
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def decision(self, probability: float) -> bool:
        """True when the study should be referred for clinician review."""
        return probability >= self.threshold


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir(repository: Path, name: str) -> Path:
    path = repository / name
    if not (path / "manifest.json").is_file():
        raise NotFound(f"model {name!r} has no manifest in the model repository")
    return path


def load_manifest(repository: Path, name: str) -> ModelManifest:
    return ModelManifest.model_validate(
        json.loads((model_dir(repository, name) / "manifest.json").read_text())
    )


def own_version_manifest(repository: Path, name: str, version: int) -> ModelManifest | None:
    """The manifest a version kept beside a newer one has of its own
    (``<name>/<version>/manifest.json``, naming that model and version), or None: the model's
    ``manifest.json`` is then the one that counts (it names the version it describes)."""
    path = repository / name / str(version) / "manifest.json"
    if not path.is_file():
        return None
    found = ModelManifest.model_validate_json(path.read_bytes())
    return found if found.name == name and found.version == version else None


def verify_artifact(repository: Path, manifest: ModelManifest, relative: str) -> Path:
    """Return the artifact's path after checking its sha256 against the manifest."""
    expected = manifest.artifacts.get(relative)
    if expected is None:
        raise IntegrityError(f"artifact {relative} is not listed in the manifest of {manifest.name}")
    path = repository / manifest.name / relative
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"artifact {relative} of {manifest.name} does not match its manifest digest",
            expected=expected,
            actual=actual,
        )
    return path
