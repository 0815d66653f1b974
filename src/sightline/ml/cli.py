"""``sightline train | evaluate | model-card``: the model's life cycle from the command line.

Mounted under the main ``sightline`` command; ``python -m sightline.ml.cli ...`` works too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

ml_app = typer.Typer(help="Train, evaluate and document the reference model.", no_args_is_help=True)

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ham10000.yaml"
FEDERATED_CONFIG = Path(__file__).parent / "configs" / "federated_ham10000.yaml"
federated_app = typer.Typer(help="Federated training (Flower): one client per site.", no_args_is_help=True)
ml_app.add_typer(federated_app, name="federated")


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


@federated_app.command("train")
def federated_train_command(
    config: Annotated[Path, typer.Option(help="YAML or JSON federated config")] = FEDERATED_CONFIG,
    dataset: Annotated[str | None, typer.Option(help="dataset folder (metadata.csv + images/)")] = None,
    repository: Annotated[str | None, typer.Option(help="export into this model repository")] = None,
    rounds: Annotated[int | None, typer.Option(help="override the config's rounds")] = None,
    strategy: Annotated[str | None, typer.Option(help="override the strategy: fedavg or fedprox")] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="override FedProx's mu")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no per-round lines")] = False,
) -> None:
    """Simulate federated training over the config's sites, calibrate, export like a central model."""
    from sightline.ml.federated import run_federated
    from sightline.ml.federated_config import load_federated_config

    cfg = load_federated_config(
        config,
        dataset=dataset,
        repository=repository,
        rounds=rounds,
        strategy=strategy,
        proximal_mu=proximal_mu,
    )
    run = run_federated(cfg, progress=not no_progress)
    typer.echo(run.fields["training_data"]["provenance"])


@ml_app.command("evaluate")
def evaluate_command(
    dataset: Annotated[
        str | None, typer.Option(help="folder with the images and a metadata CSV (image, label columns)")
    ] = None,
    metadata: Annotated[str, typer.Option(help="metadata CSV inside --dataset")] = "metadata.csv",
    split: Annotated[
        str | None, typer.Option(help="split (the CSV's split column) to evaluate; default test")
    ] = None,
    all_images: Annotated[bool, typer.Option("--all", help="evaluate every image of the folder")] = False,
    external: Annotated[
        str | None, typer.Option(help="label the report as external validation on this named dataset")
    ] = None,
    repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    out: Annotated[
        Path | None, typer.Option(help="report folder; default a new folder under var/evaluations")
    ] = None,
    update_manifest: Annotated[
        bool,
        typer.Option(
            "--update-manifest",
            help="make this the served model's evaluation (evaluation/, manifest metrics, model card)",
        ),
    ] = False,
    loso_repository: Annotated[
        list[Path] | None,
        typer.Option(help="repository holding <model>-loso-<site> models (repeatable)"),
    ] = None,
    loso_site: Annotated[
        list[str] | None,
        typer.Option(help="held-out site (repeatable); default every site with --loso-min-positives"),
    ] = None,
    loso_min_positives: Annotated[
        int, typer.Option(help="malignant images a site needs for leave-one-site-out")
    ] = 50,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% CIs")] = 1000,
    bootstrap_unit: Annotated[
        str,
        typer.Option(
            help="resample 'lesion's or 'patient's (images of one group together, by the model's "
            "group column) or 'image's"
        ),
    ] = "lesion",
    min_positives_ci: Annotated[
        int, typer.Option(help="no CI for a group with fewer malignant cases than this")
    ] = 10,
    cache_dir: Annotated[Path, typer.Option(help="image cache")] = Path(".cache"),
    no_cache: Annotated[bool, typer.Option("--no-cache", help="decode the images without the cache")] = False,
) -> None:
    """AUROC, AUPRC, sensitivity/specificity, ECE overall and per sex, age band and site, with CIs."""
    from rich.console import Console
    from sightline_common.errors import SightlineError

    from sightline.ml.evaluate import run_evaluation
    from sightline.ml.progress import rich_tracker

    console = Console()
    if bootstrap_unit not in ("lesion", "patient", "image"):
        console.print("[red]--bootstrap-unit must be 'lesion', 'patient' or 'image'[/]")
        raise typer.Exit(2)
    if split is not None and all_images:
        console.print("[red]give --split or --all, not both[/]")
        raise typer.Exit(2)
    try:
        with rich_tracker(console) as tracker:
            result = run_evaluation(
                repository,
                model,
                dataset=dataset,
                metadata=metadata,
                split=split,
                all_images=all_images,
                external=external,
                out=out,
                loso_repositories=loso_repository or [],
                loso_sites=loso_site or None,
                loso_min_positives=loso_min_positives,
                n_bootstrap=bootstrap,
                by_lesion=bootstrap_unit != "image",
                min_positives_ci=min_positives_ci,
                cache_dir=None if no_cache else cache_dir,
                update_manifest=update_manifest,
                tracker=tracker,
            )
    except SightlineError as exc:
        console.print(f"[red]evaluation failed:[/] {exc.detail}")
        raise typer.Exit(2) from exc
    console.print(summary_table(result))
    if result.get("out_of_scope", {}).get("flagged") is not None:
        oos = result["out_of_scope"]
        console.print(f"out of scope: {oos['flagged']:.1%} of {oos['n']} images flagged (about 1% expected)")
    console.print(f"report: {Path(result['out']) / 'REPORT.md'}")
    if update_manifest:
        console.print(f"updated {repository / model}: manifest.json metrics, evaluation/, MODEL_CARD.md")


@ml_app.command("fit-out-of-scope")
def fit_out_of_scope_command(
    repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    dataset: Annotated[
        str | None, typer.Option(help="training dataset folder; default the one the model was trained on")
    ] = None,
    quantile: Annotated[
        float, typer.Option(min=0.5, max=0.9999, help="validation quantile of the score used as threshold")
    ] = 0.99,
    cache_dir: Annotated[Path, typer.Option(help="image cache")] = Path(".cache"),
) -> None:
    """Fit the out-of-scope score on the training split, threshold it on validation, and make it
    a second output of the served model (model.onnx, Triton configs, manifest)."""
    from sightline.ml.out_of_scope import fit_out_of_scope

    manifest = fit_out_of_scope(repository, model, dataset=dataset, cache_dir=cache_dir, quantile=quantile)
    oos = manifest.out_of_scope
    assert oos is not None
    typer.echo(f"{model} v{manifest.version}: out-of-scope threshold {oos.threshold} ({oos.artifact})")
    typer.echo(oos.threshold_rationale)


@ml_app.command("add-version")
def add_version_command(
    source: Annotated[Path, typer.Option(help="repository a training run exported into (its config's)")],
    repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
) -> None:
    """Add a trained model as the next version beside the ones the repository keeps (it becomes the
    version the manifest names; promotion to tenants stays the gateway's decision)."""
    from sightline_common.errors import SightlineError

    from sightline.ml.versions import add_version

    try:
        manifest = add_version(repository, model, source)
    except SightlineError as exc:
        typer.echo(f"add-version failed: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{model} version {manifest.version} added to {repository}")
    typer.echo(
        f"next: sightline fit-out-of-scope --repository {repository} --model {model}; "
        f"sightline evaluate --repository {repository} --model {model} --update-manifest"
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


def summary_table(result: dict[str, Any]) -> Table:
    """Overall and per-group figures with CIs, small groups and flagged gaps marked."""
    from sightline.ml.report import _title

    table = Table(title=_title(result))
    positive = result.get("positive_label", "malignant")
    for column in ("group", "n", positive, "AUROC", "sensitivity", "specificity", "ECE", "note"):
        table.add_column(column)

    def cell(row: dict[str, Any], metric: str) -> str:
        m = row[metric]
        if m["value"] is None:
            return "n/a"
        lo, hi = m["ci95"]
        return f"{m['value']:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if lo is not None else "")

    rows = [("all", result["overall"])] + [
        (f"{a}={g}", v) for a, per in result["by_attribute"].items() for g, v in per.items()
    ]
    for name, row in rows:
        note = "[yellow]no CI: too few cases[/]" if "ci_withheld" in row else ""
        table.add_row(
            name,
            str(row["n"]),
            str(row["positives"]),
            *(cell(row, k) for k in ("auroc", "sensitivity", "specificity", "ece")),
            note,
        )
    for flag in result.get("flagged_gaps", []):
        table.caption = (table.caption or "") + (
            f"FLAGGED {flag['attribute']} {flag['metric']} gap {flag['gap']:.3f} "
            f"({flag['best']} vs {flag['worst']}); "
        )
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    ml_app()
