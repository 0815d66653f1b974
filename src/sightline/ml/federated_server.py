"""The coordinating side of federated training: Flower's strategies driving the rounds.

``run_federation`` is the whole server-side protocol on any Flower ``Grid``: a query round
(per-site counts and pixel sums: the pooled normalisation and class weight, no images), then
``rounds`` of FedAvg or FedProx (optionally wrapped in Flower's client-side-clipping DP) through
``Strategy.start``. The deployed ``ServerApp`` (``sightline.ml.federated_server:app``) hands it the
SuperLink's grid; the simulation hands it :class:`InProcessGrid`, which calls each site's
``ClientApp`` in this process and meters the bytes every message would put on the wire.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAvg,
    FedProx,
    Strategy,
)
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from sightline_explain.core.nets import build_model

from sightline.ml.federated_client import MEAN_KEY, POS_WEIGHT_KEY, RECIPE_KEY, STD_KEY, float_state
from sightline.ml.federated_config import FederatedConfig
from sightline.ml.train import pos_weight_from_counts

log = logging.getLogger(__name__)

SERVER_NODE_ID = 0
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


def wire_bytes(obj: Any) -> int:
    """Bytes of a Flower object as serialised for transport (itself and its child objects)."""
    children = obj.children or {}
    return len(obj.deflate()) + sum(wire_bytes(c) for c in children.values())


@dataclass
class WireMeter:
    """Bytes sent to and received from the sites, by message type."""

    down: dict[str, int] = field(default_factory=dict)
    up: dict[str, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.down.values()) + sum(self.up.values())


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApps in this process, called one after another.

    The simulation engine for a machine without Ray workers to spare: the strategies, messages,
    mods and records are Flower's own; only the transport is a function call. Every message is
    metered by its serialised size, the figure a SuperLink would move.
    """

    def __init__(self, nodes: dict[int, tuple[ClientApp, Context]], run_id: int = 1) -> None:
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SERVER_NODE_ID
        TaskIdentity.task_id = 0
        self._nodes = nodes
        self._run = Run.create_empty(run_id)
        self._replies: dict[str, Message] = {}
        self.meter = WireMeter()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = str(uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            kind = msg.metadata.message_type
            self.meter.down[kind] = self.meter.down.get(kind, 0) + wire_bytes(msg.content)
            client, context = self._nodes[msg.metadata.dst_node_id]
            reply = client(msg, context)
            if reply.has_content():
                self.meter.up[kind] = self.meter.up.get(kind, 0) + wire_bytes(reply.content)
            self._replies[msg_id] = reply
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def build_strategy(cfg: FederatedConfig, n_sites: int) -> Strategy:
    """FedAvg or FedProx over every site each round, weighted as configured, DP-wrapped if asked."""
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,  # the global model is scored by ``evaluate_fn`` (see docs/federated.md)
        "min_train_nodes": n_sites,
        "min_available_nodes": n_sites,
        "weighted_by_key": "uniform" if cfg.privacy else cfg.weighting,
    }
    strategy: Strategy = (
        FedProx(proximal_mu=cfg.proximal_mu, **common) if cfg.strategy == "fedprox" else FedAvg(**common)
    )
    if cfg.privacy is not None:
        # The noise is calibrated to the clipping norm over an unweighted mean: equal weights.
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy, cfg.privacy.noise_multiplier, cfg.privacy.clipping_norm, n_sites
        )
    return strategy


@dataclass
class FederationResult:
    """What a federated run produced: the final global arrays and what it cost."""

    arrays: ArrayRecord
    sites: dict[str, dict[str, int]]
    mean: list[float]
    std: list[float]
    pos_weight: float
    history: list[dict[str, float]]
    seconds: float
    best_round: int | None = None


def query_sites(
    grid: Grid, cfg: FederatedConfig
) -> tuple[dict[str, dict[str, int]], list[float], list[float]]:
    """Per-site image and malignant counts, and the pooled per-channel mean and std."""
    content = RecordDict({"config": ConfigRecord({RECIPE_KEY: cfg.model_dump_json()})})
    nodes = list(grid.get_node_ids())
    replies = list(grid.send_and_receive([Message(content, node, "query") for node in nodes]))
    failed = [r for r in replies if r.has_error()]
    if failed or len(replies) != len(nodes):
        reasons = "; ".join(str(r.error.reason) for r in failed)
        raise RuntimeError(
            f"{len(nodes) - len(replies) + len(failed)} site(s) did not answer the query: {reasons}"
        )
    sites: dict[str, dict[str, int]] = {}
    pixels, sums, squares = 0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    for reply in replies:
        m, site = reply.content["metrics"], reply.content["site"]
        assert isinstance(m, MetricRecord) and isinstance(site, ConfigRecord)
        sites[str(site["name"])] = {"images": int(m["num-examples"]), "malignant": int(m["num-positives"])}  # type: ignore[arg-type]
        pixels += int(m["pixels"])  # type: ignore[arg-type]
        sums = [a + float(b) for a, b in zip(sums, m["sum"], strict=True)]  # type: ignore[arg-type]
        squares = [a + float(b) for a, b in zip(squares, m["sumsq"], strict=True)]  # type: ignore[arg-type]
    mean = [s / pixels for s in sums]
    std = [math.sqrt(max(q / pixels - mu * mu, 1e-12)) for q, mu in zip(squares, mean, strict=True)]
    return sites, [round(v, 4) for v in mean], [round(v, 4) for v in std]


def run_federation(
    grid: Grid,
    cfg: FederatedConfig,
    *,
    evaluate: Callable[[list[float], list[float]], EvaluateFn] | None = None,
) -> FederationResult:
    """Query the sites, then run ``cfg.rounds`` rounds of the configured strategy.

    ``evaluate`` makes, from the pooled normalisation, the centralised evaluation Flower calls
    after every round (the coordinator's validation set; none in a deployment without one).
    """
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    sites, mean, std = query_sites(grid, cfg)
    positives = sum(s["malignant"] for s in sites.values())
    negatives = sum(s["images"] for s in sites.values()) - positives
    pos_weight = pos_weight_from_counts(cfg.pos_weight, negatives, positives)
    log.info(
        "%d sites, %d images (%d malignant); pos_weight %.3f",
        len(sites),
        negatives + positives,
        positives,
        pos_weight,
    )
    config = ConfigRecord(
        {RECIPE_KEY: cfg.model_dump_json(), MEAN_KEY: mean, STD_KEY: std, POS_WEIGHT_KEY: pos_weight}
    )
    initial = ArrayRecord(float_state(build_model(cfg.architecture), statistics=cfg.privacy is None))
    history: list[dict[str, float]] = []
    evaluate_fn = evaluate(mean, std) if evaluate else None

    def score(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        metrics = evaluate_fn(server_round, arrays) if evaluate_fn else None
        meter = getattr(grid, "meter", None)
        row = {"round": float(server_round), "elapsed_s": round(time.monotonic() - t0, 1)}
        if isinstance(meter, WireMeter):
            row["bytes_total"] = float(meter.total())
        if metrics is not None:
            row.update({k: float(v) for k, v in metrics.items()})  # type: ignore[arg-type]
        if history and "bytes_total" in history[-1] and "bytes_total" in row:
            row["bytes_round"] = row["bytes_total"] - history[-1]["bytes_total"]
        history.append(row)
        return metrics

    strategy = build_strategy(cfg, len(sites))
    result = strategy.start(
        grid,
        initial,
        num_rounds=cfg.rounds,
        train_config=config,
        evaluate_config=config,
        evaluate_fn=score,
    )
    for row in history:  # the sites' mean local training loss of each round, beside its evaluation
        train_metrics = result.train_metrics_clientapp.get(int(row["round"]))
        if train_metrics is not None and "train-loss" in train_metrics:
            row["train-loss"] = float(train_metrics["train-loss"])  # type: ignore[arg-type]
    return FederationResult(result.arrays, sites, mean, std, pos_weight, history, time.monotonic() - t0)


#: For ``flwr run`` against a SuperLink (deployment): the recipe comes from the run config's
#: ``config`` (a path to the federated YAML shipped in the app bundle).
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from pathlib import Path

    from sightline.ml.federated import coordinator_validation
    from sightline.ml.federated_config import load_federated_config
    from sightline.ml.federated_export import export_federated

    cfg = load_federated_config(Path(str(context.run_config["config"])))
    outcome = run_federation(grid, cfg)
    export_federated(cfg, outcome, coordinator_validation(cfg))
