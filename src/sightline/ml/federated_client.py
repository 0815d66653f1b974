"""The site side of federated training: a Flower ``ClientApp`` that trains on its own rows only.

One ClientApp serves every site; which site it is comes from the node's configuration
(``flower-supernode --node-config "site='rosendahl' dataset='/data/ham10000'"``), so the same
code runs in the in-process simulation and as a SuperNode in a hospital. What leaves a site:
the model's arrays after local training and counts (images, malignant images, per-channel pixel
sums for the normalisation); never an image, a label or a row.

Message types: ``query`` (counts and pixel sums, once before round 1), ``train`` (local epochs
from the global weights, FedProx's proximal term when ``proximal-mu`` > 0) and ``evaluate``
(the global model's loss on the site's validation rows).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from sightline_common.manifest import PreprocessSpec
from sightline_explain.core.nets import build_model
from torch import nn

from sightline.ml import data as ds
from sightline.ml.drawing import augment_batch
from sightline.ml.federated_config import FederatedConfig
from sightline.ml.prediction import model_inputs
from sightline.ml.train import predict_logits

log = logging.getLogger(__name__)

#: Keys of the ConfigRecord the server sends with every message.
RECIPE_KEY = "recipe"  # the FederatedConfig as JSON: every site trains by the same recipe
MEAN_KEY, STD_KEY = "mean", "std"  # the pooled normalisation (from the query round)
POS_WEIGHT_KEY = "pos-weight"  # from the pooled label counts


def size_spec(
    cfg: FederatedConfig, mean: list[float] | None = None, std: list[float] | None = None
) -> PreprocessSpec:
    """The preprocessing of the recipe (normalisation unit until the pooled statistics are known)."""
    return PreprocessSpec(
        height=cfg.input_size,
        width=cfg.input_size,
        resize=cfg.resize,
        colour=cfg.colour,
        mean=mean or [0, 0, 0],
        std=std or [1, 1, 1],
        accepted_modalities=[],
        accepted_sop_classes=[],
    )


@dataclass
class SiteRows:
    """One site's training and validation rows, decoded at the recipe's size."""

    site: str
    train: ds.DermSet
    val: ds.DermSet


_SITES: dict[tuple[str, str, int, str], SiteRows] = {}


def load_rows(cfg: FederatedConfig, root: Path) -> ds.DermSet:
    """Every row of a dataset folder at the recipe's size, with the columns training needs."""
    return ds.load_dataset(
        root,
        size_spec(cfg),
        cache_dir=Path(cfg.cache_dir),
        limit=cfg.limit_per_split,
        required=ds.training_columns(cfg.group_column, cfg.subgroup_columns),
        group_column=cfg.group_column,
    )


def load_site(cfg: FederatedConfig, site: str, dataset: str | None) -> SiteRows:
    """The site's rows of its dataset folder (cached per process: a SuperNode loads once)."""
    root = ds.dataset_root(dataset if dataset else cfg.dataset)
    key = (str(root), site, cfg.input_size, cfg.resize)
    if key not in _SITES:
        everything = load_rows(cfg, root)
        train = ds.select(everything, cfg.train_splits, include_sites=[site])
        if len(train) < cfg.min_site_images:
            raise ValueError(f"site {site!r} has {len(train)} training images (< {cfg.min_site_images})")
        _SITES[key] = SiteRows(site, train, ds.select(everything, [cfg.val_split], include_sites=[site]))
        log.info("site %s: %d training, %d validation images", site, len(train), len(_SITES[key].val))
    return _SITES[key]


def float_state(model: nn.Module, *, statistics: bool = True) -> dict[str, torch.Tensor]:
    """The arrays that travel: parameters and (unless ``statistics`` is false) batch-norm running
    statistics; never the integer step counters.

    Under differential privacy the statistics stay at the sites: a local epoch moves them far more
    than the weights (an update norm of ~50 of which ~49 is running variances), so clipping the
    whole update would clip away the learning. The coordinator re-estimates them instead
    (:func:`recompute_statistics`).
    """
    return {
        k: v
        for k, v in model.state_dict().items()
        if v.is_floating_point() and (statistics or ".running_" not in k)
    }


@torch.no_grad()
def recompute_statistics(model: nn.Module, inputs: np.ndarray[Any, np.dtype[np.float32]]) -> nn.Module:
    """Batch-norm running statistics re-estimated from ``inputs`` (a cumulative average over batches)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for i in range(0, len(inputs), 256):
        model(torch.from_numpy(inputs[i : i + 256]))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def round_lr(cfg: FederatedConfig, server_round: int) -> float:
    """Cosine decay over the rounds (to 2% of ``lr``): the central recipe's schedule, per round."""
    progress = (server_round - 1) / max(1, cfg.rounds - 1)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def local_train(
    model: nn.Module,
    rows: ds.DermSet,
    spec: PreprocessSpec,
    cfg: FederatedConfig,
    *,
    lr: float,
    pos_weight: float,
    mu: float,
    seed: int,
) -> float:
    """``cfg.epochs`` passes over the site's rows from the global weights; returns the mean loss.

    FedProx adds mu/2 ||w - w_global||^2, which keeps a site with few or one-sided labels from
    pulling the shared model far towards its own optimum.
    """
    global_params = [p.detach().clone() for p in model.parameters()]
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(rows.images)
    labels = torch.from_numpy(rows.labels).float()
    batch = min(cfg.batch_size, len(rows))
    steps = max(1, len(rows) // batch)
    model.train()
    total, seen = 0.0, 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(rows), generator=gen)
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            x = augment_batch(images[idx], spec, cfg.augment, gen)
            loss = criterion(model(x), labels[idx].unsqueeze(1))
            total += float(loss.item()) * len(idx)
            seen += len(idx)
            if mu > 0:
                loss = loss + mu / 2 * sum(
                    ((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params, strict=True)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return total / max(1, seen)


def _config(msg: Message) -> ConfigRecord:
    return next(iter(msg.content.config_records.values()))


def _setup(msg: Message, context: Context) -> tuple[FederatedConfig, SiteRows, PreprocessSpec]:
    config = _config(msg)
    cfg = FederatedConfig.model_validate_json(str(config[RECIPE_KEY]))
    node = context.node_config
    # A SuperNode names its site; Flower's Ray simulation numbers its nodes (partition-id).
    site = str(node["site"]) if "site" in node else cfg.sites[int(node["partition-id"])]
    rows = load_site(cfg, site, str(node["dataset"]) if node.get("dataset") else None)
    mean = [float(v) for v in config.get(MEAN_KEY, [0.0, 0.0, 0.0])]  # type: ignore[union-attr]
    std = [float(v) for v in config.get(STD_KEY, [1.0, 1.0, 1.0])]  # type: ignore[union-attr]
    return cfg, rows, size_spec(cfg, mean, std)


def global_model(cfg: FederatedConfig, arrays: ArrayRecord) -> nn.Module:
    """The recipe's network with the global arrays (integer step counters stay local)."""
    model = build_model(cfg.architecture)
    model.load_state_dict(arrays.to_torch_state_dict(), strict=False)
    with torch.no_grad():
        for module in model.modules():
            # Differential privacy's noise on the mean can push a batch-norm variance below zero.
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                module.running_var.clamp_(min=1e-4)
    return model


def pixel_sums(images: np.ndarray[Any, np.dtype[np.uint8]]) -> tuple[list[float], list[float], int]:
    """Per-channel sum and sum of squares of the pixels in [0, 1], and the pixel count."""
    x = images.reshape(-1, 3).astype(np.float64) / 255.0
    return x.sum(0).tolist(), (x * x).sum(0).tolist(), int(x.shape[0])


def make_client_app(*, privacy: bool = False) -> ClientApp:
    """The site's ClientApp; ``privacy`` adds Flower's client-side clipping of the update."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        _, rows, _ = _setup(msg, context)
        sums, squares, pixels = pixel_sums(rows.train.images)
        metrics = MetricRecord(
            {
                "num-examples": len(rows.train),
                "num-positives": int(rows.train.labels.sum()),
                "pixels": pixels,
                "sum": sums,
                "sumsq": squares,
            }
        )
        site = ConfigRecord({"name": rows.site})
        return Message(RecordDict({"metrics": metrics, "site": site}), reply_to=msg)

    @app.train(mods=[fixedclipping_mod] if privacy else None)
    def train(msg: Message, context: Context) -> Message:
        cfg, rows, spec = _setup(msg, context)
        config = _config(msg)
        server_round = int(config.get("server-round", 1))  # type: ignore[arg-type]
        torch.set_num_threads(cfg.threads)
        received = next(iter(msg.content.array_records.values()))
        model = global_model(cfg, received)
        loss = local_train(
            model,
            rows.train,
            spec,
            cfg,
            lr=round_lr(cfg, server_round),
            pos_weight=float(config.get(POS_WEIGHT_KEY, 1.0)),  # type: ignore[arg-type]
            mu=float(config.get("proximal-mu", 0.0)),  # type: ignore[arg-type]
            seed=cfg.seed * 1000 + server_round,
        )
        positives = int(rows.train.labels.sum())
        metrics = MetricRecord(
            {
                "num-examples": len(rows.train),
                # a site without a malignant image still counts a little under positive weighting
                "num-positives": max(positives, 1),
                "uniform": 1,
                "train-loss": loss,
            }
        )
        state = model.state_dict()
        arrays = ArrayRecord({k: state[k] for k in received})  # the arrays the server sent, updated
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg, rows, spec = _setup(msg, context)
        model = global_model(cfg, next(iter(msg.content.array_records.values())))
        val = rows.val if len(rows.val) else rows.train
        logits = predict_logits(model, model_inputs(val.images, spec))
        loss = float(
            F.binary_cross_entropy_with_logits(
                torch.tensor(logits), torch.tensor(val.labels, dtype=torch.float64)
            )
        )
        metrics = MetricRecord({"num-examples": len(val), "val-loss": loss})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


#: For ``flower-supernode`` (deployment): ``sightline.ml.federated_client:app`` /
#: ``app_private`` (with differential privacy's client-side clipping).
app = make_client_app()
app_private = make_client_app(privacy=True)
