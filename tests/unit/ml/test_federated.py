"""Federated training (Flower): two sites, two rounds, a small model, on generated images.

What a user would notice: the run exports a servable model with a manifest (sha256 of every
artifact) whose provenance names the rounds and sites; each site trains on its own rows only;
what crosses the wire is the weights (bytes per round of the order of the model's size); DP
adds its epsilon to the manifest; the command exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sightline_common.manifest import load_manifest, sha256_file
from typer.testing import CliRunner

from sightline.ml.cli import ml_app
from sightline.ml.evaluate import run_evaluation
from sightline.ml.federated import run_federated
from sightline.ml.federated_client import load_site
from sightline.ml.federated_config import FederatedConfig, PrivacyConfig, epsilon_spent
from tests.unit.ml.conftest import make_tiny_dataset

SITES = ["vidir_modern", "rosendahl"]  # the generated dataset's two sites


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 12 images per split and label: 24 training images, 12 per site
    return make_tiny_dataset(tmp_path_factory.mktemp("fed") / "tiny", per_split_label=12)


def small_config(dataset: Path, tmp_path: Path, **changes: object) -> FederatedConfig:
    base: dict[str, object] = {
        "dataset": str(dataset),
        "cache_dir": str(tmp_path / "cache"),
        "run_dir": str(tmp_path / "run"),
        "repository": str(tmp_path / "repo"),
        "input_size": 32,
        "sites": SITES,
        "rounds": 2,
        "batch_size": 8,
        "threads": 1,
        "strategy": "fedprox",
        "proximal_mu": 0.1,
        "architecture": {"name": "LesionNet", "kwargs": {"widths": [8, 16, 16, 16], "dropout": 0.0}},
    }
    return FederatedConfig.model_validate({**base, **changes})


def test_two_round_simulation_exports_a_model_with_federated_provenance(
    dataset: Path, tmp_path: Path
) -> None:
    cfg = small_config(dataset, tmp_path)
    run = run_federated(cfg, progress=False)

    manifest = load_manifest(tmp_path / "repo", "derm-cnn-federated")
    folder = tmp_path / "repo" / "derm-cnn-federated"
    assert set(manifest.artifacts) >= {"1/model.onnx", "1/model.pt", "config.pbtxt"}
    for relative, digest in manifest.artifacts.items():
        assert sha256_file(folder / relative) == digest
    provenance = manifest.training_data["provenance"]
    assert provenance.startswith("federated, 2 rounds, sites rosendahl, vidir_modern")
    assert "FedProx mu=0.1" in provenance
    federated = manifest.training_data["federated"]
    assert federated["sites"] == {
        "rosendahl": {"images": 12, "malignant": 6},
        "vidir_modern": {"images": 12, "malignant": 6},
    }
    assert [h["round"] for h in federated["history"]] == [0, 1, 2]
    # Weights down to and back from each of the two sites: 4 model copies per round, plus the
    # serialisation (a .npy header per array) and the recipe sent with each message.
    model_bytes = sum(
        t.numel() * t.element_size() for t in run.model.state_dict().values() if t.is_floating_point()
    )
    assert 4 * model_bytes < federated["bytes_per_round"] < 6 * model_bytes
    # The same evaluation as a centrally trained model.
    report = run_evaluation(
        tmp_path / "repo",
        "derm-cnn-federated",
        dataset=dataset,
        n_bootstrap=20,
        cache_dir=None,
        out=tmp_path / "eval",
    )
    assert report["overall"]["n"] == 24
    assert set(report["by_attribute"]["site"]) == set(SITES)


def test_a_site_client_holds_only_its_own_rows(dataset: Path, tmp_path: Path) -> None:
    cfg = small_config(dataset, tmp_path)
    for site in SITES:
        rows = load_site(cfg, site, str(dataset))
        assert set(rows.train.meta["site"]) == {site}
        assert set(rows.train.meta["split"]) == {"train"}


def test_differential_privacy_records_epsilon(dataset: Path, tmp_path: Path) -> None:
    privacy = PrivacyConfig(noise_multiplier=1.0, clipping_norm=0.5)
    cfg = small_config(dataset, tmp_path, strategy="fedavg", privacy=privacy, repository=None)
    run = run_federated(cfg, progress=False)
    recorded = run.fields["training_data"]["federated"]["privacy"]
    assert recorded["epsilon"] == pytest.approx(epsilon_spent(1.0, 2, 1e-5), abs=1e-3)
    assert "DP noise 1 clip 0.5" in run.fields["training_data"]["provenance"]
    fields = json.loads((tmp_path / "run" / "manifest_fields.json").read_text())
    assert fields["training_data"]["federated"]["weighting"] == "num-examples"


def test_more_noise_or_fewer_rounds_spends_less_privacy() -> None:
    assert epsilon_spent(2.0, 10, 1e-5) < epsilon_spent(1.0, 10, 1e-5) < epsilon_spent(1.0, 20, 1e-5)


def test_cli_has_federated_train(dataset: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(ml_app, ["federated", "train", "--help"])
    assert out.exit_code == 0
    assert "--rounds" in out.output and "--strategy" in out.output


def test_the_shipped_config_federates_the_four_ham10000_sites() -> None:
    from sightline.ml.cli import FEDERATED_CONFIG
    from sightline.ml.federated_config import HAM10000_SITES, load_federated_config

    cfg = load_federated_config(FEDERATED_CONFIG)
    assert cfg.sites == HAM10000_SITES
    assert cfg.strategy == "fedprox" and cfg.proximal_mu > 0


def test_under_dp_batch_norm_statistics_stay_at_the_sites() -> None:
    from sightline_explain.core.nets import build_model

    from sightline.ml.federated_client import float_state

    model = build_model({"name": "LesionNet", "kwargs": {"widths": [8, 16, 16, 16]}})
    assert any(".running_var" in k for k in float_state(model))
    shared_under_dp = float_state(model, statistics=False)
    assert shared_under_dp and not any(".running_" in k for k in shared_under_dp)


def test_a_site_scores_the_global_model_on_its_own_validation_rows(dataset: Path, tmp_path: Path) -> None:
    """The ``evaluate`` message a SuperLink sends when federated evaluation is on."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity
    from sightline_explain.core.nets import build_model

    from sightline.ml.federated_client import RECIPE_KEY, float_state, make_client_app

    cfg = small_config(dataset, tmp_path)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    content = RecordDict(
        {
            "arrays": ArrayRecord(float_state(build_model(cfg.architecture))),
            "config": ConfigRecord({RECIPE_KEY: cfg.model_dump_json()}),
        }
    )
    message = Message(content, 1, "evaluate")
    context = Context(1, 1, {"site": "rosendahl", "dataset": str(dataset)}, RecordDict(), {})
    reply = make_client_app()(message, context)
    assert not reply.has_error()
    metrics = reply.content["metrics"]
    assert metrics["num-examples"] == 12  # rosendahl's validation rows only
    assert float(metrics["val-loss"]) > 0


@pytest.mark.slow
def test_flowers_ray_simulation_engine_trains_the_same_model(dataset: Path, tmp_path: Path) -> None:
    """The in-process grid is only a transport: Flower's Ray engine (ray 2.60, without the
    ``simulation`` extra's pin) gives the same rounds, round for round."""
    inprocess = run_federated(small_config(dataset, tmp_path / "a", repository=None), progress=False)
    on_ray = run_federated(
        small_config(dataset, tmp_path / "b", repository=None, engine="ray"), progress=False
    )
    rounds = [[round(h["val-auroc"], 6) for h in r.outcome.history] for r in (inprocess, on_ray)]
    assert rounds[0] == rounds[1]
