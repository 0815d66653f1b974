"""The out-of-scope score: how unlike the training images an input is, from the model's own pass.

Two parts, both computed inside the served graph:

1. **Feature distance** (Lee et al., NeurIPS 2018, "A simple unified framework for detecting
   out-of-distribution samples"): the global-average-pooled activations of every stage of the
   network (the stem and each residual block; 480 numbers for derm-cnn), standardised with the
   training means and deviations; each class gets its mean, the classes share one covariance
   estimated with Ledoit-Wolf shrinkage (480 dimensions from ~6,000 images); the distance is the
   Mahalanobis distance to the nearest class mean. Earlier stages are included, not only the
   penultimate layer, because they encode colour and exposure. This catches other modalities,
   photographs and badly exposed images (AUROC ~1.0) but not blur: a blurred lesion is
   near the training data in every stage's pooled activations (AUROC 0.61 for sigma 3 px on
   blurred test images; mean+std pooling did no better on validation images).
2. **Input sharpness**: the log-variance of the Laplacian of the model's input (grey, 0-1),
   the usual focus measure; a single number, so a strong deviation is not diluted among 480
   others as it would be inside the Mahalanobis distance.

Each part is scaled to 1.0 at its own validation quantile (``1 - (1 - q) / 2``: 0.995 for
q = 0.99; sharpness on its lower tail, from the validation median), the score is the larger of
the two, and the threshold is the validation q-quantile of that score (about 1% of
in-distribution images flagged). Everything was chosen on the training and validation splits
(blurred copies of validation images for part 2); the test split and the out-of-scope
evaluation set (``benchmarks/bench_out_of_scope.py``) were used only to report.

The fitted statistics are stored as ``<version>/out_of_scope.npz`` (sha256 in the manifest) and
compiled into ``<version>/model.onnx`` as a second output, ``out_of_scope_score``: Triton (either
configuration), evaluation and this module's numpy reference compute one function.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sightline_common.manifest import (
    ModelManifest,
    PreprocessSpec,
    load_manifest,
    sha256_file,
    verify_artifact,
)
from torch import nn

from sightline.ml.export import OUT_OF_SCOPE_OUTPUT, OUTPUT_NAME, export_onnx, refresh_serving_files

log = logging.getLogger(__name__)

ARTIFACT = "out_of_scope.npz"
DEFAULT_QUANTILE = 0.99
METHOD = (
    "max of two parts, each 1.0 at its validation 0.995 quantile: the Mahalanobis distance (Lee et al. "
    "2018) of the standardised, global-average-pooled activations of every network stage to the "
    "nearest training class mean (shared Ledoit-Wolf covariance, training split), and the input's "
    "blur (log-variance of the Laplacian of the grey input below the validation median)"
)
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


@dataclass
class OutOfScopeStats:
    """Fitted statistics (float32): standardisation, class means, shared precision, part scales."""

    shift: NDArray[np.float32]  # (D,) training mean of each pooled activation
    scale: NDArray[np.float32]  # (D,) training standard deviation
    means: NDArray[np.float32]  # (C, D) class means of the standardised features
    precision: NDArray[np.float32]  # (D, D) inverse of the shrunk shared covariance
    # (3,): distance at its validation quantile; median and lower quantile of the sharpness
    parts: NDArray[np.float32]

    def distance(self, features: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Mahalanobis distance to the nearest class mean (part 1, unscaled)."""
        z = (np.asarray(features, np.float64) - self.shift) / self.scale
        best = np.full(len(z), np.inf)
        for mu in self.means.astype(np.float64):
            d = z - mu
            best = np.minimum(best, np.einsum("nd,de,ne->n", d, self.precision.astype(np.float64), d))
        distance: NDArray[np.float64] = np.sqrt(np.maximum(best, 0.0))
        return distance

    def score(
        self, features: NDArray[np.floating[Any]], sharpness: NDArray[np.floating[Any]]
    ) -> NDArray[np.float64]:
        """The numpy reference of the served score."""
        ref, median, low = (float(v) for v in self.parts)
        blur = (median - np.asarray(sharpness, np.float64)) / (median - low)
        score: NDArray[np.float64] = np.maximum(self.distance(features) / ref, blur)
        return score

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            shift=self.shift,
            scale=self.scale,
            means=self.means,
            precision=self.precision,
            parts=self.parts,
        )
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> OutOfScopeStats:
        with np.load(path) as z:
            return cls(z["shift"], z["scale"], z["means"], z["precision"], z["parts"])


def fit_stats(
    features: NDArray[np.floating[Any]],
    labels: NDArray[np.int64],
    val_features: NDArray[np.floating[Any]],
    val_sharpness: NDArray[np.floating[Any]],
    part_quantile: float,
) -> OutOfScopeStats:
    """Class means and a shared Ledoit-Wolf covariance of standardised training features; each
    part's scale from the validation split."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, np.float64)
    shift = x.mean(0)
    scale = x.std(0) + 1e-6
    z = (x - shift) / scale
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(0) for c in classes])
    centred = z - means[np.searchsorted(classes, labels)]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    stats = OutOfScopeStats(
        shift.astype(np.float32),
        scale.astype(np.float32),
        means.astype(np.float32),
        lw.precision_.astype(np.float32),
        np.zeros(3, np.float32),
    )
    ref = np.quantile(stats.distance(val_features), part_quantile)
    median, low = np.quantile(val_sharpness, [0.5, 1.0 - part_quantile])
    stats.parts = np.asarray([ref, median, low], np.float32)
    return stats


def stage_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit (N,1), pooled activations of every stage (N,D)) of a LesionNet, in one pass."""
    pooled = []
    h = x
    for stage in model.features:  # type: ignore[union-attr]
        h = stage(h)
        pooled.append(h.mean(dim=(2, 3)))
    logit: torch.Tensor = model.forward_head(h)  # type: ignore[operator]
    return logit, torch.cat(pooled, dim=1)


def laplacian_kernel() -> torch.Tensor:
    return torch.tensor(_LAPLACIAN, dtype=torch.float32).view(1, 1, 3, 3)


def input_sharpness(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, kernel: torch.Tensor | None = None
) -> torch.Tensor:
    """log-variance of the Laplacian of the grey input (0-1), one border pixel dropped: (N,)."""
    grey = (x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)).mean(dim=1, keepdim=True)
    kernel = laplacian_kernel() if kernel is None else kernel
    lap = F.conv2d(grey, kernel)[:, 0, 1:-1, 1:-1]
    centred = lap - lap.mean(dim=(1, 2), keepdim=True)
    return torch.log((centred * centred).mean(dim=(1, 2)) + 1e-8)


@torch.no_grad()
def pooled_features(
    model: nn.Module, inputs: NDArray[np.float32], spec: PreprocessSpec, batch: int = 256
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Logits (N,), pooled stage activations (N, D) and input sharpness (N,) of model-ready inputs."""
    model.eval()
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    logits, feats, sharp = [], [], []
    for i in range(0, len(inputs), batch):
        x = torch.from_numpy(inputs[i : i + batch])
        z, f = stage_outputs(model, x)
        logits.append(z[:, 0].numpy())
        feats.append(f.numpy())
        sharp.append(input_sharpness(x, mean, std).numpy())
    return (
        np.concatenate(logits).astype(np.float64),
        np.concatenate(feats).astype(np.float64),
        np.concatenate(sharp).astype(np.float64),
    )


class ScoredNet(nn.Module):
    """The served function: the network's logit and the out-of-scope score of the same pass."""

    shift: torch.Tensor
    scale: torch.Tensor
    means: torch.Tensor
    precision: torch.Tensor
    parts: torch.Tensor
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    laplacian: torch.Tensor

    def __init__(self, net: nn.Module, stats: OutOfScopeStats, spec: PreprocessSpec) -> None:
        super().__init__()
        self.net = net
        for name in ("shift", "scale", "means", "precision", "parts"):
            self.register_buffer(name, torch.from_numpy(np.asarray(getattr(stats, name), np.float32)))
        self.register_buffer("pixel_mean", torch.tensor(spec.mean, dtype=torch.float32))
        self.register_buffer("pixel_std", torch.tensor(spec.std, dtype=torch.float32))
        self.register_buffer("laplacian", laplacian_kernel())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, feats = stage_outputs(self.net, x)
        z = (feats - self.shift) / self.scale
        d = z.unsqueeze(1) - self.means.unsqueeze(0)  # (N, C, D)
        m = ((d @ self.precision) * d).sum(-1)  # (N, C) squared distances
        distance = torch.sqrt(torch.clamp(m.min(dim=1).values, min=0.0)) / self.parts[0]
        sharp = input_sharpness(x, self.pixel_mean, self.pixel_std, self.laplacian)
        blur = (self.parts[1] - sharp) / (self.parts[1] - self.parts[2])
        return logit, torch.maximum(distance, blur).unsqueeze(1)


def threshold_at(val_scores: NDArray[np.float64], quantile: float) -> float:
    """The score above which an in-distribution (validation) image is flagged with probability 1 - q."""
    return float(np.quantile(val_scores, quantile))


def _quantiles(x: NDArray[np.float64]) -> dict[str, float]:
    return {str(q): round(float(np.quantile(x, q)), 4) for q in (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)}


def fit_out_of_scope(
    repository: Path,
    name: str,
    *,
    dataset: str | None = None,
    cache_dir: Path | None = Path(".cache"),
    quantile: float = DEFAULT_QUANTILE,
    threads: int = 2,
) -> ModelManifest:
    """Fit the score on the model's training split, set its threshold on validation, and write
    ``<version>/out_of_scope.npz``, the two-output ``model.onnx``, both Triton configurations and
    the manifest (its ``out_of_scope`` entry and digests). The weights (``model.pt``) and the
    logit are unchanged; the logit of the new ONNX is checked against the old one.
    """
    import onnxruntime as ort
    from sightline_explain.core.nets import load_checkpoint

    from sightline.ml import data as ds
    from sightline.ml.prediction import model_inputs

    torch.set_num_threads(threads)
    manifest = load_manifest(repository, name)
    root = repository / name
    vdir = root / str(manifest.version)
    weights = verify_artifact(repository, manifest, f"{manifest.version}/model.pt")
    old_onnx = verify_artifact(repository, manifest, f"{manifest.version}/model.onnx")
    net = load_checkpoint(str(weights), manifest.architecture)
    cfg = manifest.training_data.get("config", {})
    train_splits = list(manifest.training_data.get("train_splits", ["train"]))
    val_split = str(manifest.training_data.get("val_split", "val"))
    group = str(manifest.training_data.get("group_column", "lesion_id"))
    root_data = ds.dataset_root(dataset if dataset is not None else cfg.get("dataset"))
    required = ds.training_columns(group, [])
    data = ds.load_dataset(
        root_data, manifest.preprocessing, cache_dir=cache_dir, required=required, group_column=group
    )
    excluded = list(manifest.training_data.get("excluded_sites", []))
    train = ds.select(data, train_splits, exclude_sites=excluded)
    val = ds.select(data, [val_split], exclude_sites=excluded)
    spec = manifest.preprocessing
    _, f_train, s_train = pooled_features(net, model_inputs(train.images, spec), spec)
    val_inputs = model_inputs(val.images, spec)
    _, f_val, s_val = pooled_features(net, val_inputs, spec)
    stats = fit_stats(f_train, train.labels, f_val, s_val, 1.0 - (1.0 - quantile) / 2)
    val_scores = stats.score(f_val, s_val)
    threshold = threshold_at(val_scores, quantile)
    train_scores = stats.score(f_train, s_train)

    (vdir / ARTIFACT).write_bytes(stats.to_bytes())
    scored = ScoredNet(net, stats, spec).eval()
    new_onnx = vdir / "model.onnx.new"
    export_onnx(
        scored,
        new_onnx,
        spec.height,
        spec.width,
        len(spec.mean),
        output_names=(OUTPUT_NAME, OUT_OF_SCOPE_OUTPUT),
    )
    session = ort.InferenceSession(str(new_onnx), providers=["CPUExecutionProvider"])
    old = ort.InferenceSession(str(old_onnx), providers=["CPUExecutionProvider"])
    probe = val_inputs[:64]
    new_logit, new_score = session.run(None, {"image": probe})
    old_logit = old.run(None, {"image": probe})[0]
    if not np.allclose(new_logit, old_logit, atol=1e-4):
        new_onnx.unlink()
        raise RuntimeError("the two-output ONNX changes the logit; refusing to replace model.onnx")
    if not np.allclose(new_score[:, 0], val_scores[:64], rtol=1e-3, atol=1e-3):
        new_onnx.unlink()
        raise RuntimeError("the ONNX out-of-scope score disagrees with the fitted statistics")
    new_onnx.replace(vdir / "model.onnx")

    flagged_val = float((val_scores > threshold).mean())
    spec_fields = {
        "method": METHOD,
        "artifact": f"{manifest.version}/{ARTIFACT}",
        "threshold": round(threshold, 4),
        "threshold_rationale": (
            f"The {quantile:.2f} quantile of the score on the validation split ({len(val_scores)} images, "
            f"never used to fit it): {flagged_val:.3f} of in-distribution validation images are flagged. "
            "A flag says the probability comes from an image unlike those the model was evaluated on "
            "(another modality or body part, a photograph of something else, a blurred or badly exposed "
            "image, an unseen device): the clinician should not rely on it."
        ),
        "fitted_on": {
            "splits": train_splits,
            "n": len(train_scores),
            "dimensions": int(f_train.shape[1]),
            "classes": manifest.labels,
            "quantile": quantile,
            "part_scales": {
                "distance_at_val_quantile": round(float(stats.parts[0]), 4),
                "sharpness_val_median": round(float(stats.parts[1]), 4),
                "sharpness_at_val_lower_quantile": round(float(stats.parts[2]), 4),
                "part_quantile": 1.0 - (1.0 - quantile) / 2,
            },
            "train_score_quantiles": _quantiles(train_scores),
        },
        "validation": {
            "split": val_split,
            "n": len(val_scores),
            "flagged_share": round(flagged_val, 4),
            "score_quantiles": _quantiles(val_scores),
        },
    }
    # A refit changes the score and its threshold: an earlier evaluation no longer describes it.
    spec_fields["evaluation"] = {}
    raw = json.loads((root / "manifest.json").read_text())
    raw["out_of_scope"] = spec_fields
    (root / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    updated = refresh_serving_files(repository, name)
    log.info(
        "out-of-scope score for %s v%d: threshold %.3f, %s",
        name,
        manifest.version,
        threshold,
        sha256_file(vdir / ARTIFACT)[:12],
    )
    return updated
