"""Internal JSON bodies between services (pydantic, ``extra="forbid"``).

Tensors never travel as JSON: they go as Open Inference Protocol v2 binary tensors over gRPC.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DeidSummary(_Strict):
    """What de-identification did: counts per action and the recipe, never values."""

    recipe: str
    recipe_version: str
    actions: dict[str, int]


class ExplainRequest(_Strict):
    """Explain one de-identified image stored in object storage."""

    object_key: str = Field(description="key of the de-identified DICOM instance in object storage")
    output_prefix: str = Field(description="key prefix under which the heatmap and overlay are written")
    model_name: str
    model_version: int = Field(ge=1)
    target: int = Field(default=1, ge=0, le=1, description="1 explains the positive label, 0 the negative")


class HeatmapPeak(_Strict):
    row: float = Field(ge=0.0, le=1.0, description="relative position, 0 = top")
    col: float = Field(ge=0.0, le=1.0, description="relative position, 0 = left")


class ExplainResponse(_Strict):
    model_name: str
    model_version: int
    model_sha256: str
    method: str = "grad-cam"
    target: int
    heatmap_key: str = Field(description="float16 .npy heatmap at the model input size, values in [0, 1]")
    overlay_key: str = Field(description="PNG overlay with colour legend and the assistive-use label")
    peak: HeatmapPeak
    fraction_above_half: float = Field(ge=0.0, le=1.0, description="share of the image with heat >= 0.5")
    duration_ms: float
    probability: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="calibrated probability of the positive label from the explained checkpoint "
        "(a consistency check against Triton's answer, not a second prediction)",
    )
