"""Train a reference model from a config file, calibrate it on validation, export it.

One run: seeded training with the config's augmentation and a class-weighted loss, the best
epoch by validation AUROC kept; the class-weight prior shift removed from the head's bias;
temperature scaling and an operating threshold (target sensitivity) chosen on validation;
the reference distribution for drift monitoring; export into a model repository.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.uid
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sightline_common.imaging import LUMA
from sightline_common.manifest import ModelManifest, PreprocessSpec
from sightline_explain.core.nets import build_model
from sklearn.metrics import roc_auc_score
from torch import nn

from sightline.ml import data as ds
from sightline.ml.drawing import augment_batch, site_label_weights
from sightline.ml.export import export_model_atomically
from sightline.ml.metrics import expected_calibration_error
from sightline.ml.modelcard import INTENDED_USE, LICENCE, LIMITATIONS
from sightline.ml.prediction import choose_threshold, model_inputs, sigmoid
from sightline.ml.reference import reference_distribution
from sightline.ml.train_config import TaskConfig, TrainConfig

log = logging.getLogger(__name__)
console = Console(stderr=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def channel_stats(images: NDArray[np.uint8], colour: str = "RGB") -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images in [0, 1] (the normalisation of the spec);
    one channel, the luma, for a MONOCHROME model."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    if colour == "MONOCHROME":
        x = (x @ np.asarray(LUMA))[:, None]
    return [round(float(v), 4) for v in x.mean(0)], [round(float(v), 4) for v in x.std(0)]


def sop_class_uids(keywords: list[str]) -> list[str]:
    """pydicom.uid keywords (``DigitalXRayImageStorageForPresentation``) to their UIDs."""
    uids = []
    for keyword in keywords:
        uid = getattr(pydicom.uid, keyword, None)
        if not isinstance(uid, str):
            raise ValueError(f"{keyword!r} is not a SOP class keyword of pydicom.uid")
        uids.append(str(uid))
    return uids


@torch.no_grad()
def predict_logits(
    model: nn.Module, inputs: NDArray[np.float32], batch_size: int = 256
) -> NDArray[np.float64]:
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(inputs), batch_size):
        x = torch.from_numpy(inputs[i : i + batch_size]).to(device)
        out.append(model(x).float().squeeze(1).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def fit_temperature(logits: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """The temperature minimising validation NLL of sigmoid(logit / T) (Guo et al. 2017)."""
    z = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    # Perfectly separated validation logits drive T to 0 (ever sharper is ever better): bound it.
    return min(max(float(log_t.exp().item()), MIN_TEMPERATURE), MAX_TEMPERATURE)


def serving_spec(cfg: TrainConfig, mean: list[float], std: list[float]) -> PreprocessSpec:
    """The served preprocessing: the recipe's size, the training normalisation, the task's scope."""
    task = cfg.task
    return PreprocessSpec(
        height=cfg.input_size,
        width=cfg.input_size,
        resize=cfg.resize,
        colour=cfg.colour,
        mean=mean,
        std=std,
        accepted_modalities=task.accepted_modalities,
        accepted_sop_classes=sop_class_uids(task.accepted_sop_classes),
        accepted_body_parts=task.accepted_body_parts,
        accepted_photometric_interpretations=task.accepted_photometric_interpretations,
        min_rows=task.min_rows,
        min_columns=task.min_columns,
    )


def with_input_statistics(
    architecture: dict[str, Any], mean: list[float], std: list[float]
) -> dict[str, Any]:
    """The architecture as the manifest records it: a colour-constancy stage gets the training
    normalisation it undoes (it works on intensities, the served tensor is normalised)."""
    out = copy.deepcopy(architecture)
    colour = out.get("kwargs", {}).get("colour_constancy")
    if colour is not None:
        colour.update(mean=mean, std=std)
    return out


def resolve_pos_weight(setting: float | str, labels: NDArray[np.int64]) -> float:
    return pos_weight_from_counts(setting, int((labels == 0).sum()), int((labels == 1).sum()))


def pos_weight_from_counts(setting: float | str, negatives: int, positives: int) -> float:
    """The recipe's class weight (``sqrt``, ``balanced``, ``none`` or a number) from the counts
    (a federated run's are pooled from the sites' reports)."""
    ratio = negatives / max(1, positives)
    if setting == "none":
        return 1.0
    if setting == "sqrt":
        return math.sqrt(ratio)
    if setting == "balanced":
        return ratio
    return float(setting)


def _counts(meta: Any, column: str, labels: list[str]) -> dict[str, dict[str, int]]:
    table = meta.groupby([column, "label"]).size().unstack(fill_value=0)
    return {str(k): {labels[0]: int(r.get(0, 0)), labels[1]: int(r.get(1, 0))} for k, r in table.iterrows()}


def _card_texts(task: TaskConfig) -> dict[str, Any]:
    """Intended use, limitations and licence: the config's, else the dermoscopy model's."""
    return {
        "intended_use": task.intended_use or INTENDED_USE,
        "limitations": task.limitations or LIMITATIONS,
        "licence": task.licence or LICENCE,
    }


@dataclass
class TrainResult:
    model: nn.Module
    fields: dict[str, Any]
    history: list[dict[str, float]]
    manifest: ModelManifest | None


def train(cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run one training as the config says; export it when ``cfg.repository`` is set."""
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = ds.dataset_root(cfg.dataset)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    size_spec = PreprocessSpec(
        height=cfg.input_size,
        width=cfg.input_size,
        resize=cfg.resize,
        colour=cfg.colour,
        mean=[0, 0, 0],
        std=[1, 1, 1],
        accepted_modalities=[],
        accepted_sop_classes=[],
    )
    t0 = time.monotonic()
    everything = ds.load_dataset(
        root,
        size_spec,
        cache_dir=Path(cfg.cache_dir),
        limit=cfg.limit_per_split,
        required=ds.training_columns(cfg.group_column, cfg.subgroup_columns),
        group_column=cfg.group_column,
    )
    train_set = ds.select(everything, cfg.train_splits, exclude_sites=cfg.exclude_sites)
    val_set = ds.select(everything, [cfg.val_split], exclude_sites=cfg.exclude_sites)
    console.print(
        f"data: {len(train_set)} train, {len(val_set)} val images ({time.monotonic() - t0:.0f} s to load)"
    )
    mean, std = channel_stats(train_set.images, cfg.colour)
    spec = serving_spec(cfg, mean, std)

    architecture = with_input_statistics(cfg.architecture, mean, std)
    model = build_model(architecture).to(device)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
    pos_weight = resolve_pos_weight(cfg.pos_weight, train_set.labels)
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_set) // cfg.batch_size)
    # Warm-up then cosine decay over the planned steps; the plan shrinks when the time budget
    # will not fit all epochs, so that a cut-short run still ends at a small learning rate.
    plan = {"epochs": cfg.epochs}

    def lr_factor(step: int) -> float:
        total = max(1, plan["epochs"] * steps_per_epoch)
        warm = max(1, int(0.1 * total))
        if step < warm:
            return (step + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.from_numpy(train_set.images)
    labels = torch.from_numpy(train_set.labels).float()
    val_inputs = model_inputs(val_set.images, spec)
    draw_weights = (
        torch.from_numpy(
            site_label_weights(train_set.meta["site"].to_numpy(), train_set.labels, cfg.sampling_max_weight)
        )
        if cfg.sampling == "site_label_balanced"
        else None
    )

    history: list[dict[str, float]] = []
    best_auc, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
    started, cpu_started = time.monotonic(), time.process_time()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = (
                torch.multinomial(draw_weights, len(images), replacement=True, generator=gen)
                if draw_weights is not None
                else torch.randperm(len(images), generator=gen)
            )
            task = bar.add_task(f"epoch {epoch}/{plan['epochs']}", total=steps_per_epoch, loss=float("nan"))
            total, seen = 0.0, 0
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x = augment_batch(images[idx], spec, cfg.augment, gen).to(device, non_blocking=True)
                y = labels[idx].unsqueeze(1).to(device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss = criterion(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += float(loss.item()) * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, loss=total / seen)
            bar.remove_task(task)
            val_logits = predict_logits(model, val_inputs)
            val_auc = (
                float(roc_auc_score(val_set.labels, val_logits))
                if len(set(val_set.labels)) == 2
                else float("nan")
            )
            val_loss = float(
                F.binary_cross_entropy_with_logits(
                    torch.tensor(val_logits),
                    torch.tensor(val_set.labels, dtype=torch.float64),
                    pos_weight=torch.tensor(pos_weight, dtype=torch.float64),
                )
            )
            elapsed = time.monotonic() - started
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / seen,
                    "val_loss": val_loss,
                    "val_auroc": val_auc,
                    "lr": float(sched.get_last_lr()[0]),
                    "elapsed_s": round(elapsed, 1),
                }
            )
            improved = not math.isnan(val_auc) and val_auc > best_auc
            if improved or best_epoch == 0:
                best_auc, best_state, best_epoch = val_auc, copy.deepcopy(model.state_dict()), epoch
            console.print(
                f"epoch {epoch}: train loss {total / seen:.4f}  val loss {val_loss:.4f}  "
                f"val AUROC {val_auc:.4f}{'  *best' if improved else ''}  ({elapsed:.0f} s)"
            )
            budgets = []
            if cfg.max_minutes is not None:
                # CPU time per thread, not wall time: on a shared machine other load stretches the
                # wall clock without giving this run more compute.
                used = min(elapsed, (time.process_time() - cpu_started) / cfg.threads)
                budgets.append((cfg.max_minutes, int(cfg.max_minutes * 60 / (used / epoch))))
            if cfg.max_wall_minutes is not None:
                # A hard wall-clock bound: the epochs left must fit in the time left at this pace.
                budgets.append((cfg.max_wall_minutes, int(cfg.max_wall_minutes * 60 / (elapsed / epoch))))
            for minutes, fits in budgets:
                if fits < plan["epochs"]:
                    plan["epochs"] = max(epoch, fits)
                    console.print(f"time budget {minutes} min: planning {plan['epochs']} epochs")
            if epoch >= plan["epochs"]:
                break

    model.load_state_dict(best_state)
    model = model.cpu().eval().to(memory_format=torch.contiguous_format)
    # A class-weighted loss inflates the odds by pos_weight: undo it in the bias (logit adjustment),
    # so that temperature scaling only has to fix the spread, not the offset.
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and head.bias is not None and pos_weight != 1.0:
        with torch.no_grad():
            head.bias.sub_(math.log(pos_weight))
    val_logits = predict_logits(model, val_inputs)
    temperature = fit_temperature(val_logits, val_set.labels)
    val_probs = sigmoid(val_logits / temperature)
    threshold, sens, spec_at = choose_threshold(val_probs, val_set.labels, cfg.target_sensitivity)
    val_metrics = {
        "auroc": round(float(roc_auc_score(val_set.labels, val_logits)), 4),
        "ece_uncalibrated": round(expected_calibration_error(val_set.labels, sigmoid(val_logits)), 4),
        "ece": round(expected_calibration_error(val_set.labels, val_probs), 4),
        "sensitivity": round(sens, 4),
        "specificity": round(spec_at, 4),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
    }
    console.print(
        f"best epoch {best_epoch}: val AUROC {val_metrics['auroc']}, T={temperature:.3f}, "
        f"threshold {threshold:.4f} (sens {sens:.3f}, spec {spec_at:.3f}), val ECE {val_metrics['ece']}"
    )
    about = cfg.task
    positives = int(val_set.labels.sum())
    fields: dict[str, Any] = {
        "name": cfg.name,
        "placeholder": False,
        "architecture": architecture,
        "preprocessing": spec.model_dump(),
        "labels": about.labels,
        "positive_label": about.positive_label,
        "threshold": round(threshold, 6),
        "threshold_rationale": (
            "Highest threshold on the calibrated probability reaching sensitivity >= "
            f"{cfg.target_sensitivity:.2f} "
            f"for {about.positive_label} on the validation split ({positives} {about.positive_label} of "
            f"{len(val_set)}): "
            f"validation sensitivity {sens:.3f}, specificity {spec_at:.3f}. {about.threshold_reason}"
        ),
        "temperature": round(temperature, 6),
        "training_data": {
            "dataset": about.dataset,
            "licence": about.dataset_licence,
            "task": about.description,
            "split": about.split,
            "group_column": cfg.group_column,
            "train_splits": cfg.train_splits,
            "val_split": cfg.val_split,
            "excluded_sites": cfg.exclude_sites,
            "n_train": len(train_set),
            "n_val": len(val_set),
            **{
                f"train_by_{column}": _counts(train_set.meta, column, about.labels)
                for column in cfg.subgroup_columns
            },
            "train_counts": _counts(train_set.meta.assign(all="all"), "all", about.labels)["all"],
            "pos_weight": round(pos_weight, 4),
            "config": cfg.model_dump(mode="json"),
            "history": history,
        },
        "metrics": {"validation": val_metrics},
        "reference_distribution": reference_distribution(
            train_set.stats, val_probs, score_of=f"calibrated probability of {about.positive_label}"
        ),
        **_card_texts(about),
    }
    torch.save(model.state_dict(), run_dir / "best.pt")
    (run_dir / "manifest_fields.json").write_text(json.dumps(fields, indent=2) + "\n")
    manifest = None
    if cfg.repository is not None:
        manifest = export_model_atomically(
            model, Path(cfg.repository), fields, staging=Path(cfg.cache_dir) / "staging"
        )
        console.print(f"exported {cfg.name} to {cfg.repository}")
    return TrainResult(model, fields, history, manifest)
