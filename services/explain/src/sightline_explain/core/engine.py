"""The explanation pipeline without the web framework: check, prepare, explain, publish.

The Serve deployment calls these steps around its batched CAM computation; tests and the
report command call them directly.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sightline_common.contracts import ExplainResponse, HeatmapPeak
from sightline_common.errors import Conflict, NotFound
from sightline_common.imaging import prepare, read_dicom
from sightline_common.manifest import ModelManifest
from sightline_common.storage import ObjectStore, check_key
from torch import nn

from sightline_explain.core.gradcam import CamBatch, Method, explain_batch
from sightline_explain.core.model import load_model_version, load_served_model
from sightline_explain.core.render import heatmap_npy, overlay_png, summarise

log = logging.getLogger(__name__)

#: Prefix of the outputs of requests that sent DICOM bytes rather than an object key.
GENERATED_PREFIX = "explanations"


@dataclass(frozen=True)
class PreparedImage:
    """The model input (C, H, W) and the resized RGB image it came from (H, W, 3)."""

    tensor: NDArray[np.float32]
    rgb: NDArray[np.uint8]


def generated_prefix() -> str:
    """An opaque output prefix for requests that did not name one."""
    return f"{GENERATED_PREFIX}/{uuid.uuid4().hex}"


class ExplanationEngine:
    """One loaded model version (sha256-checked) and the object store its outputs go to."""

    def __init__(
        self, manifest: ModelManifest, model: nn.Module, store: ObjectStore, method: Method = "grad-cam"
    ) -> None:
        self.manifest = manifest
        self.model = model
        self.store = store
        self.method: Method = method
        self.model_sha256 = manifest.artifacts[f"{manifest.version}/model.pt"]
        target_layer = manifest.architecture.get("target_layer")
        self.target_layer: str | None = None if target_layer is None else str(target_layer)
        if self.target_layer is not None:
            model.get_submodule(self.target_layer)  # a manifest naming no layer fails at load

    @classmethod
    def load(
        cls, repository: Path, name: str, store: ObjectStore, method: Method = "grad-cam"
    ) -> ExplanationEngine:
        """Load ``model.pt`` of the served version; a digest mismatch raises ``IntegrityError``."""
        manifest, model = load_served_model(repository, name)
        return cls(manifest, model, store, method)

    def check_model(self, name: str, version: int | None) -> None:
        """Refuse (409) a request for a model or version other than the one this service loaded."""
        if name != self.manifest.name or (version is not None and version != self.manifest.version):
            raise Conflict(
                "the requested model version is not the one this service explains",
                reason="model-mismatch",
                loaded_model_name=self.manifest.name,
                loaded_model_version=self.manifest.version,
            )

    def prepare(self, dicom: bytes) -> PreparedImage:
        """Decode and preprocess with the shared code the preprocess service uses."""
        x, rgb, _ = prepare(read_dicom(dicom), self.manifest.preprocessing)
        return PreparedImage(tensor=x, rgb=rgb)

    def load_object(self, key: str) -> bytes:
        return self.store.get(check_key(key))

    def compute(self, images: Sequence[PreparedImage], targets: Sequence[int]) -> CamBatch:
        """CAMs for a batch of prepared images (one forward, one backward through the head)."""
        device = next(self.model.parameters()).device
        batch = torch.from_numpy(np.stack([im.tensor for im in images])).to(device)
        return explain_batch(self.model, batch, list(targets), self.method, self.target_layer)

    def publish(
        self,
        image: PreparedImage,
        heat: NDArray[np.floating[Any]],
        logit: float,
        target: int,
        output_prefix: str,
        started: float,
    ) -> ExplainResponse:
        """Store the heatmap (.npy, float16) and the overlay (PNG); return the summary."""
        prefix = check_key(output_prefix.rstrip("/"))
        heatmap_key, overlay_key = f"{prefix}/heatmap.npy", f"{prefix}/overlay.png"
        label = self.manifest.labels[target] if target < len(self.manifest.labels) else str(target)
        title = f"{self.manifest.name} v{self.manifest.version}: {self.method} for '{label}'"
        self.store.put(heatmap_key, heatmap_npy(heat), "application/octet-stream")
        self.store.put(overlay_key, overlay_png(image.rgb, heat, title=title), "image/png")
        summary = summarise(heat)
        return ExplainResponse(
            model_name=self.manifest.name,
            model_version=self.manifest.version,
            model_sha256=self.model_sha256,
            method=self.method,
            target=target,
            heatmap_key=heatmap_key,
            overlay_key=overlay_key,
            peak=HeatmapPeak(row=summary.peak_row, col=summary.peak_col),
            fraction_above_half=summary.fraction_above,
            probability=self.manifest.calibrated_probability(logit),
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )


class EngineSet:
    """The engines of every model this service explains, by model name (one object store).

    Each model's served version is loaded at start; another version a request names (a canary
    study's) is loaded on its first request, sha256-checked against that version's manifest,
    and kept (at most :attr:`MAX_EXTRA_VERSIONS` per model, the least recently used dropped).
    """

    MAX_EXTRA_VERSIONS = 2

    def __init__(
        self,
        engines: Mapping[str, ExplanationEngine],
        store: ObjectStore,
        repository: Path | None = None,
        method: Method = "grad-cam",
    ) -> None:
        self.engines = dict(engines)
        self.store = store
        self.repository, self.method = repository, method
        #: Every loaded engine by its key: the model name for the served version, name/version else.
        self.by_key: dict[str, ExplanationEngine] = dict(self.engines)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, repository: Path, names: Sequence[str], store: ObjectStore, method: Method = "grad-cam"
    ) -> EngineSet:
        """Load each model's ``model.pt`` (sha256-checked against its manifest)."""
        engines = {name: ExplanationEngine.load(repository, name, store, method) for name in names}
        return cls(engines, store, repository, method)

    def get(self, name: str, version: int | None) -> ExplanationEngine:
        """The engine of ``name`` at ``version`` (None: the served one); refuse (409) a model this
        service does not explain or a version the repository does not have."""
        engine = self.engines.get(name)
        if engine is None:
            raise Conflict(
                "the requested model is not one this service explains",
                reason="model-mismatch",
                loaded_models=sorted(self.engines),
            )
        if version is None or version == engine.manifest.version:
            return engine
        return self._version(engine, version)

    @staticmethod
    def key(name: str, version: int) -> str:
        return f"{name}/{version}"

    def _version(self, served: ExplanationEngine, version: int) -> ExplanationEngine:
        name = served.manifest.name
        key = self.key(name, version)
        with self._lock:
            found = self.by_key.pop(key, None)
            if found is not None:
                self.by_key[key] = found  # most recently used last
                return found
            if self.repository is None:
                served.check_model(name, version)  # raises: no repository to load another from
            assert self.repository is not None
            try:
                manifest, model = load_model_version(self.repository, name, version)
            except NotFound:
                served.check_model(name, version)  # the 409 a version not loaded always was
                raise
            device = next(served.model.parameters()).device
            engine = ExplanationEngine(manifest, model.to(device), self.store, self.method)
            extra = [k for k in self.by_key if k.startswith(f"{name}/")]
            for old in extra[: max(0, len(extra) + 1 - self.MAX_EXTRA_VERSIONS)]:
                del self.by_key[old]
            self.by_key[key] = engine
            log.info("explain loaded %s v%d on request", name, version)
            return engine

    def _by_key(self, key: str) -> ExplanationEngine:
        """A loaded engine by key; one dropped since its request came is loaded again."""
        found = self.by_key.get(key)
        if found is not None:
            return found
        name, _, version = key.rpartition("/")
        return self.get(name, int(version))

    def engine_key(self, engine: ExplanationEngine) -> str:
        """The key :meth:`compute` finds ``engine`` by."""
        name = engine.manifest.name
        served = self.engines.get(name)
        return name if served is engine else self.key(name, engine.manifest.version)

    def compute(self, jobs: Sequence[tuple[str, PreparedImage, int]]) -> list[tuple[NDArray[Any], float]]:
        """CAMs of (model, image, target) jobs: one batch per model, results in the jobs' order."""
        out: list[tuple[NDArray[Any], float]] = [(np.zeros(0), 0.0)] * len(jobs)
        for name in dict.fromkeys(j[0] for j in jobs):
            idx = [i for i, j in enumerate(jobs) if j[0] == name]
            cams = self._by_key(name).compute([jobs[i][1] for i in idx], [jobs[i][2] for i in idx])
            heat, logits = cams.heatmaps.cpu().numpy(), cams.logits.cpu().tolist()
            for k, i in enumerate(idx):
                out[i] = (heat[k], float(logits[k]))
        return out
