"""``sightline train | evaluate | model-card``: the model's life cycle from the command line.

Mounted under the main ``sightline`` command; ``python -m sightline.ml.cli ...`` works too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

ml_app = typer.Typer(help="Train, evaluate and document the reference model.", no_args_is_help=True)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ham10000.yaml"


@ml_app.command("train")
def train_command(
    config: Annotated[Path, typer.Option(help="YAML or JSON training config")] = DEFAULT_CONFIG,
    dataset: Annotated[str | None, typer.Option(help="dataset folder (metadata.csv + images/)")] = None,
    repository: Annotated[str | None, typer.Option(help="export into this model repository")] = None,
    epochs: Annotated[int | None, typer.Option(help="override the config's epochs")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
) -> None:
    """Train from a config, calibrate on validation, export to the model repository."""
    from sightline.ml.train import train
    from sightline.ml.train_config import load_config

    cfg = load_config(config, dataset=dataset, repository=repository, epochs=epochs)
    train(cfg, progress=not no_progress)


@ml_app.command("evaluate")
def evaluate_command(
    repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    dataset: Annotated[str | None, typer.Option(help="dataset folder (metadata.csv + images/)")] = None,
    split: Annotated[str, typer.Option(help="split to evaluate")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="report folder; default <repository>/<model>/evaluation")
    ] = None,
    loso_repository: Annotated[
        Path | None, typer.Option(help="repository holding a model trained without --loso-site")
    ] = None,
    loso_model: Annotated[
        str, typer.Option(help="name of the leave-one-site-out model")
    ] = "derm-cnn-loso-rosendahl",
    loso_site: Annotated[str, typer.Option(help="held-out site")] = "rosendahl",
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% CIs")] = 1000,
    cache_dir: Annotated[Path, typer.Option(help="image cache")] = Path(".cache"),
    update_manifest: Annotated[
        bool, typer.Option(help="write the summary into manifest.json metrics")
    ] = True,
) -> None:
    """AUROC, AUPRC, sensitivity/specificity, ECE overall and per sex, age band and site."""
    from sightline.ml.evaluate import run_evaluation

    run_evaluation(
        repository,
        model,
        dataset=dataset,
        split=split,
        out=out,
        loso_repository=loso_repository,
        loso_model=loso_model,
        loso_site=loso_site,
        n_bootstrap=bootstrap,
        cache_dir=cache_dir,
        update_manifest=update_manifest,
    )


@ml_app.command("model-card")
def model_card_command(
    repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    evaluation: Annotated[Path | None, typer.Option(help="evaluation.json; default beside the model")] = None,
    out: Annotated[Path | None, typer.Option(help="default <repository>/<model>/MODEL_CARD.md")] = None,
) -> None:
    """Write MODEL_CARD.md beside the manifest from the evaluation output."""
    from sightline.ml.modelcard import write_model_card

    path = write_model_card(repository, model, evaluation=evaluation, out=out)
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    ml_app()
