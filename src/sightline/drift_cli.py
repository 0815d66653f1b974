"""``sightline drift report``: reference vs current distributions of a model's inputs and scores.

Reads a window of observations (JSON lines written by ``DriftMonitor(observations_file=...)``: one
object per study with the image statistics, ``score``, ``decision``, ``model``, ``version`` and
``segment``) and the model manifest's reference, prints PSI/KS per feature and draws a PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import numpy.typing as npt
import typer
from sightline_common.drift import DEFAULT_PSI_THRESHOLD, SCORE, Reference, drift_of, read_observations
from sightline_common.manifest import load_manifest

FloatArray = npt.NDArray[np.float64]

drift_app = typer.Typer(
    help="Input and prediction drift against the training reference.", no_args_is_help=True
)


@drift_app.callback()
def _group() -> None:
    """Input and prediction drift against the training reference."""


@drift_app.command("report")
def report(
    observations: Annotated[
        Path, typer.Option(help="JSON-lines observations file", exists=True, dir_okay=False)
    ],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("drift-report.png"),
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    model_repository: Annotated[Path, typer.Option(help="model repository")] = Path("model_repository"),
    version: Annotated[str | None, typer.Option(help="only this version (default: the manifest's)")] = None,
    segment: Annotated[str | None, typer.Option(help="only this site/device segment")] = None,
    window: Annotated[int, typer.Option(min=1, help="the most recent N observations")] = 500,
    threshold: Annotated[float, typer.Option(help="PSI alarm threshold")] = DEFAULT_PSI_THRESHOLD,
) -> None:
    """Print PSI and KS per feature for the latest window and draw reference vs current histograms."""
    manifest = load_manifest(model_repository, model)
    reference = Reference.from_manifest(manifest)
    if not reference.features:
        typer.echo(f"{model} v{manifest.version}: the manifest has no reference_distribution", err=True)
        raise typer.Exit(2)
    want = version or str(manifest.version)
    rows = [
        r
        for r in read_observations(observations)
        if r.get("model") == model
        and str(r.get("version")) == want
        and (segment is None or r.get("segment") == segment)
    ][-window:]
    if not rows:
        typer.echo(f"no observations of {model} v{want}{' in ' + segment if segment else ''}", err=True)
        raise typer.Exit(1)
    psi, ks = drift_of(reference, rows)
    typer.echo(f"{model} v{want} segment={segment or 'all'} n={len(rows)} (threshold PSI {threshold})")
    for name in psi:
        flag = "DRIFT" if psi[name] > threshold else "ok"
        typer.echo(f"  {name:<12} PSI {psi[name]:7.3f}  KS {ks[name]:5.3f}  {flag}")
    _draw(manifest.reference_distribution, rows, psi, threshold, out, f"{model} v{want} ({segment or 'all'})")
    typer.echo(f"wrote {out}")


def _reference_hist(summary: dict[str, Any]) -> tuple[FloatArray, FloatArray] | None:
    hist = summary.get("histogram")
    if isinstance(hist, dict) and hist.get("edges") and hist.get("counts"):
        return np.asarray(hist["edges"], float), np.asarray(hist["counts"], float)
    return None


def _draw(
    dist: dict[str, object],
    rows: list[dict[str, object]],
    psi: dict[str, float],
    threshold: float,
    out: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = dist.get("image_stats") or {}
    summaries: dict[str, dict[str, Any]] = (
        {k: v for k, v in stats.items() if isinstance(v, dict)} if isinstance(stats, dict) else {}
    )
    score = dist.get(SCORE)
    if isinstance(score, dict):
        summaries[SCORE] = score
    names = [n for n in psi if n in summaries]
    cols = 3
    fig, axes = plt.subplots(
        (len(names) + cols - 1) // cols,
        cols,
        figsize=(4 * cols, 3 * ((len(names) + 2) // cols)),
        squeeze=False,
    )
    for ax, name in zip(axes.flat, names, strict=False):
        current = np.asarray([float(cast(float, r[name])) for r in rows if name in r], dtype=np.float64)
        ref = _reference_hist(summaries[name])
        if ref is not None:
            edges, counts = ref
            ax.stairs(
                counts / max(counts.sum(), 1) / np.diff(edges), edges, label="reference", fill=True, alpha=0.4
            )
            bins: FloatArray | int = edges
        else:
            bins = 20
        lo, hi = (float(edges[0]), float(edges[-1])) if ref is not None else (None, None)
        if ref is not None and current.size and (current.min() < lo or current.max() > hi):
            bins = np.linspace(min(lo, current.min()), max(hi, current.max()), 25)
        ax.hist(current, bins=bins, density=True, histtype="step", linewidth=2, label="current")
        colour = "tab:red" if psi[name] > threshold else "black"
        ax.set_title(f"{name}: PSI {psi[name]:.2f}", color=colour)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"Drift: {title}, n={len(rows)}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
