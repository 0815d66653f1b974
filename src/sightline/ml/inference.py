"""The served artifact, run as Triton's python backend runs it: ONNX Runtime on the manifest's version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from numpy.typing import NDArray
from sightline_common.manifest import ModelManifest, verify_artifact

from sightline.ml import data as ds
from sightline.ml.prediction import model_inputs, sigmoid


@dataclass
class Scored:
    """Model outputs on a set of images, with the rows they belong to."""

    meta: pd.DataFrame
    labels: NDArray[np.int64]
    logits: NDArray[np.float64]
    probs: NDArray[np.float64]
    #: The served graph's out-of-scope score (None for a model without one).
    out_of_scope: NDArray[np.float64] | None = None


def served_onnx(manifest: ModelManifest) -> str:
    """The ONNX artifact Triton serves for this manifest, relative to the model's folder."""
    return f"{manifest.version}/model.onnx"


def onnx_session(repository: Path, manifest: ModelManifest, threads: int = 2) -> ort.InferenceSession:
    """ONNX Runtime session on the served artifact after checking its sha256 against the manifest."""
    path = verify_artifact(repository, manifest, served_onnx(manifest))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def score(
    repository: Path,
    manifest: ModelManifest,
    data: ds.DermSet,
    batch: int = 128,
    advance: Callable[[int], None] | None = None,
) -> Scored:
    """Logits and calibrated probabilities (the manifest's temperature) of every image of ``data``.

    ``advance`` is called with the number of images after each batch (a progress bar's hook).
    """
    session = onnx_session(repository, manifest)
    inputs = model_inputs(data.images, manifest.preprocessing)
    name_in = session.get_inputs()[0].name
    with_score = manifest.out_of_scope is not None and len(session.get_outputs()) > 1
    parts, oos = [], []
    for i in range(0, len(inputs), batch):
        outputs = session.run(None, {name_in: inputs[i : i + batch]})
        parts.append(outputs[0][:, 0])
        if with_score:
            oos.append(outputs[1][:, 0])
        if advance is not None:
            advance(len(parts[-1]))
    logits = np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)
    scores = (np.concatenate(oos).astype(np.float64) if oos else np.zeros(0)) if with_score else None
    return Scored(data.meta, data.labels, logits, sigmoid(logits / manifest.temperature), scores)
