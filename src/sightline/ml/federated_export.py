"""A federated model into the model repository, exactly as a centrally trained one goes.

The global weights get the central recipe's finishing steps on the coordinator's validation set
(the class-weight bias shift removed, temperature, the operating threshold, the drift reference)
and are exported by :func:`~sightline.ml.export.export_model_atomically`: manifest with every
artifact's sha256, ONNX, Triton configurations. The manifest's ``training_data.provenance`` says
"federated, N rounds, these sites"; ``training_data.federated`` holds the details.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from sightline_common.manifest import ModelManifest
from sklearn.metrics import roc_auc_score
from torch import nn

from sightline.ml import data as ds
from sightline.ml.export import export_model_atomically
from sightline.ml.federated_client import global_model, recompute_statistics
from sightline.ml.federated_config import FederatedConfig, epsilon_spent
from sightline.ml.federated_server import FederationResult
from sightline.ml.metrics import expected_calibration_error
from sightline.ml.prediction import choose_threshold, model_inputs, sigmoid
from sightline.ml.reference import reference_distribution
from sightline.ml.train import _card_texts, fit_temperature, predict_logits, serving_spec


def provenance(cfg: FederatedConfig, outcome: FederationResult, sites: list[str]) -> str:
    how = "FedAvg" if cfg.strategy == "fedavg" else f"FedProx mu={cfg.proximal_mu:g}"
    dp = (
        f", DP noise {cfg.privacy.noise_multiplier:g} clip {cfg.privacy.clipping_norm:g}"
        if cfg.privacy
        else ""
    )
    return (
        f"federated, {cfg.rounds} rounds, sites {', '.join(sites)} ({how}, weighted by {cfg.weighting}{dp})"
    )


def _finite(epsilon: float) -> float | None:
    """JSON has no infinity: clipping without noise records epsilon as null."""
    return None if math.isinf(epsilon) else round(epsilon, 3)


def export_federated(
    cfg: FederatedConfig, outcome: FederationResult, validation: ds.DermSet
) -> tuple[nn.Module, dict[str, Any], ModelManifest | None]:
    """Calibrate the global model on ``validation`` and export it when ``cfg.repository`` is set."""
    model = global_model(cfg, outcome.arrays).eval()
    spec = serving_spec(cfg, outcome.mean, outcome.std)
    inputs = model_inputs(validation.images, spec)
    if cfg.privacy is not None:  # batch-norm statistics stayed at the sites: estimate them here
        recompute_statistics(model, inputs)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and head.bias is not None and outcome.pos_weight != 1.0:
        with torch.no_grad():
            head.bias.sub_(math.log(outcome.pos_weight))
    logits = predict_logits(model, inputs)
    temperature = fit_temperature(logits, validation.labels)
    probs = sigmoid(logits / temperature)
    threshold, sens, spec_at = choose_threshold(probs, validation.labels, cfg.target_sensitivity)
    task = cfg.task
    sites = sorted(outcome.sites)
    per_round = [h["bytes_round"] for h in outcome.history if "bytes_round" in h]
    federated: dict[str, Any] = {
        "strategy": cfg.strategy,
        "proximal_mu": cfg.proximal_mu,
        "weighting": cfg.weighting,
        "rounds": cfg.rounds,
        "best_round": outcome.best_round,
        "local_epochs": cfg.epochs,
        "sites": outcome.sites,
        "bytes_per_round": round(sum(per_round) / len(per_round)) if per_round else None,
        "history": outcome.history,
        "seconds": round(outcome.seconds, 1),
    }
    if cfg.privacy is not None:
        federated["privacy"] = {
            **cfg.privacy.model_dump(),
            "epsilon": _finite(epsilon_spent(cfg.privacy.noise_multiplier, cfg.rounds, cfg.privacy.delta)),
            "unit": "site (client-level DP), zCDP accounting, no sampling amplification",
        }
    positives = int(validation.labels.sum())
    fields: dict[str, Any] = {
        "name": cfg.name,
        "placeholder": False,
        "architecture": cfg.architecture,
        "preprocessing": spec.model_dump(),
        "labels": task.labels,
        "positive_label": task.positive_label,
        "threshold": round(threshold, 6),
        "threshold_rationale": (
            "Highest threshold on the calibrated probability reaching sensitivity >= "
            f"{cfg.target_sensitivity:.2f} for {task.positive_label} on the validation split "
            f"({positives} {task.positive_label} of {len(validation)}): "
            f"validation sensitivity {sens:.3f}, specificity {spec_at:.3f}. "
            f"{task.threshold_reason}"
        ),
        "temperature": round(temperature, 6),
        "training_data": {
            "provenance": provenance(cfg, outcome, sites),
            "dataset": task.dataset,
            "licence": task.dataset_licence,
            "task": task.description,
            "split": task.split,
            "group_column": cfg.group_column,
            "train_splits": cfg.train_splits,
            "val_split": cfg.val_split,
            "n_train": sum(s["images"] for s in outcome.sites.values()),
            "n_val": len(validation),
            "pos_weight": round(outcome.pos_weight, 4),
            "config": cfg.model_dump(mode="json"),
            "federated": federated,
        },
        "metrics": {
            "validation": {
                "auroc": round(float(roc_auc_score(validation.labels, logits)), 4),
                "ece": round(expected_calibration_error(validation.labels, probs), 4),
                "sensitivity": round(sens, 4),
                "specificity": round(spec_at, 4),
            }
        },
        # The sites' training pixels never reach the coordinator: the input reference is its
        # validation images'.
        "reference_distribution": reference_distribution(
            validation.stats, probs, score_of=f"calibrated probability of {task.positive_label}"
        ),
        **_card_texts(task),
    }
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run_dir / "best.pt")
    (run_dir / "manifest_fields.json").write_text(json.dumps(fields, indent=2) + "\n")
    manifest = None
    if cfg.repository is not None:
        manifest = export_model_atomically(
            model, Path(cfg.repository), fields, staging=Path(cfg.cache_dir) / "staging"
        )
    return model, fields, manifest
