"""``sightline federated train``: federated training of the reference model, simulated on one machine.

Each site of the config is a Flower client holding only its own rows; the server side is
:func:`~sightline.ml.federated_server.run_federation` with Flower's FedAvg/FedProx strategies, over
:class:`~sightline.ml.federated_server.InProcessGrid` (the ClientApps called in this process: on a
2-core machine Ray's worker processes would cost more than the training). The global model of the
best round is kept, as central training keeps its best epoch, then calibrated and exported like a
central one. The round is chosen by the mean of the per-site validation AUROCs: pooled over
sites, AUROC rewards ranking a low-prevalence site's images low (site as a shortcut), which a
federated model, never seeing two sites in one batch, does not learn. Deployment across
hospitals runs the same ClientApp and strategies under a SuperLink and one SuperNode per site:
docs/federated.md.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
from rich.console import Console
from sightline_common.manifest import ModelManifest
from sklearn.metrics import roc_auc_score
from torch import nn

from sightline.ml import data as ds
from sightline.ml.federated_client import (
    global_model,
    load_rows,
    make_client_app,
    recompute_statistics,
    size_spec,
)
from sightline.ml.federated_config import FederatedConfig
from sightline.ml.federated_export import export_federated
from sightline.ml.federated_server import EvaluateFn, FederationResult, InProcessGrid, run_federation
from sightline.ml.prediction import model_inputs
from sightline.ml.subgroups import MIN_POSITIVES_CI
from sightline.ml.train import predict_logits

log = logging.getLogger(__name__)
console = Console(stderr=True)


def coordinator_validation(cfg: FederatedConfig) -> ds.DermSet:
    """The validation rows the coordinator calibrates and picks the round on (the sites' val split)."""
    everything = load_rows(cfg, ds.dataset_root(cfg.dataset))
    return ds.select(everything, [cfg.val_split], include_sites=cfg.sites)


def simulation_grid(cfg: FederatedConfig) -> InProcessGrid:
    """One node per site, each a ClientApp that knows only its site name and dataset folder."""
    client = make_client_app(privacy=cfg.privacy is not None)
    nodes = {
        i: (
            client,
            Context(
                run_id=1,
                node_id=i,
                node_config={"site": site, "dataset": cfg.dataset or ""},
                state=RecordDict(),
                run_config={},
            ),
        )
        for i, site in enumerate(cfg.sites, start=1)
    }
    return InProcessGrid(nodes)


def auroc(labels: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


@dataclass
class BestRound:
    round: int = -1
    auroc: float = -1.0
    arrays: ArrayRecord | None = None


def validation_scorer(
    cfg: FederatedConfig, validation: ds.DermSet, best: BestRound, progress: bool
) -> Callable[[list[float], list[float]], EvaluateFn]:
    """Pooled, per-site and mean-of-sites validation AUROC after each round; keeps the best round
    by the mean of the sites with at least ``MIN_POSITIVES_CI`` malignant validation images."""
    sites = validation.meta["site"].to_numpy()

    def make(mean: list[float], std: list[float]) -> EvaluateFn:
        inputs = model_inputs(validation.images, size_spec(cfg, mean, std))

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model = global_model(cfg, arrays)
            if cfg.privacy is not None:  # batch-norm statistics did not travel: estimate them here
                recompute_statistics(model, inputs)
            logits = predict_logits(model, inputs)
            pooled = auroc(validation.labels, logits)
            metrics: dict[str, float] = {"val-auroc": pooled if pooled is not None else float("nan")}
            per_site, reliable = [], []
            for site in cfg.sites:
                mask = sites == site
                value = auroc(validation.labels[mask], logits[mask])
                if value is not None:
                    metrics[f"val-auroc-{site}"] = value
                    per_site.append(value)
                    if validation.labels[mask].sum() >= MIN_POSITIVES_CI:
                        reliable.append(value)
            # Sites with a handful of malignant validation images (vidir_molemax: 4) swing the mean
            # by chance: average the sites with enough for a confidence interval, if any.
            macro = float(np.mean(reliable or per_site)) if per_site else float("nan")
            metrics["val-auroc-macro"] = macro
            if server_round > 0 and not np.isnan(macro) and macro > best.auroc:
                best.round, best.auroc, best.arrays = server_round, macro, copy.deepcopy(arrays)
            if progress:
                console.print(
                    f"round {server_round}/{cfg.rounds}: val AUROC {metrics['val-auroc']:.4f} pooled, "
                    f"{macro:.4f} mean of sites"
                )
            return MetricRecord(metrics)  # type: ignore[arg-type]

        return evaluate

    return make


def run_on_ray(
    cfg: FederatedConfig, evaluate: Callable[[list[float], list[float]], EvaluateFn]
) -> FederationResult:
    """The same ServerApp logic and ClientApp under Flower's Ray simulation engine (a node per site)."""
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    outcomes: list[FederationResult] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        outcomes.append(run_federation(grid, cfg, evaluate=evaluate))

    run_simulation(
        server_app=server,
        client_app=make_client_app(privacy=cfg.privacy is not None),
        num_supernodes=len(cfg.sites),
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0},
            # A Ray of its own: never join a running cluster (the platform's Ray Serve is one).
            "init_args": {"address": "local", "num_cpus": cfg.threads},
        },
    )
    if not outcomes:
        raise RuntimeError("the Ray simulation ended without a result (see Flower's log above)")
    return outcomes[0]


@dataclass
class FederatedRun:
    model: nn.Module
    fields: dict[str, Any]
    manifest: ModelManifest | None
    outcome: FederationResult


def run_federated(cfg: FederatedConfig, *, progress: bool = True) -> FederatedRun:
    """Simulate the federation on this machine, keep the best round, calibrate, export."""
    torch.set_num_threads(cfg.threads)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    validation = coordinator_validation(cfg)
    if progress:
        console.print(
            f"federated {cfg.strategy} over {', '.join(cfg.sites)}: {cfg.rounds} rounds, "
            f"{len(validation)} validation images at the coordinator"
        )
    best = BestRound()
    evaluate = validation_scorer(cfg, validation, best, progress)
    if cfg.engine == "ray":
        outcome = run_on_ray(cfg, evaluate)
    else:
        outcome = run_federation(simulation_grid(cfg), cfg, evaluate=evaluate)
    if best.arrays is not None:
        outcome.arrays, outcome.best_round = best.arrays, best.round
    model, fields, manifest = export_federated(cfg, outcome, validation)
    if progress:
        fed = fields["training_data"]["federated"]
        console.print(
            f"best round {outcome.best_round}: val AUROC {fields['metrics']['validation']['auroc']}, "
            f"{fed['bytes_per_round']} bytes per round, {outcome.seconds:.0f} s"
            + (f"; exported {cfg.name} to {cfg.repository}" if manifest else "")
        )
    return FederatedRun(model, fields, manifest, outcome)
