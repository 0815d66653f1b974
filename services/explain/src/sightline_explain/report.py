"""Faithfulness reports: ``python -m sightline_explain.report deletion --out DIR``.

Runs Grad-CAM of the served checkpoint (sha256-checked) on a set of images, draws the mean
deletion and insertion curves against a random-order baseline, and writes
``deletion_insertion.png`` and ``deletion_insertion.json`` (per-image and mean AUCs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from PIL import Image
from sightline_common.imaging import normalise, resize

from sightline_explain.core.faithfulness import Curves, curves, heat_order, random_order
from sightline_explain.core.gradcam import explain_batch
from sightline_explain.core.model import load_served_model
from sightline_explain.core.render import ASSISTIVE_LABEL

log = logging.getLogger(__name__)
DEFAULT_IMAGES = Path(os.environ.get("SIGHTLINE_DATASET", "../shared/datasets/ham10000")) / "images"


def _mean(rows: list[Curves], field: str) -> NDArray[np.float64]:
    mean: NDArray[np.float64] = np.mean([getattr(c, field) for c in rows], axis=0)
    return mean


def select_images(folder: Path, count: int) -> list[Path]:
    """``count`` images; with a HAM10000-style ``metadata.csv`` beside the folder (``image``,
    ``label``, ``split``), half malignant and half benign from the test (or val) split."""
    import csv

    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    meta = folder.parent / "metadata.csv"
    if not meta.is_file():
        return files[:count]
    with meta.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if {"image", "label"} <= r.keys()]
    held_out = [r for r in rows if r.get("split") in ("test", "val")] or rows
    picked: list[Path] = []
    for label, want in (("1", count // 2), ("0", count - count // 2)):
        paths = sorted(folder.parent / r["image"] for r in held_out if r["label"] == label)
        picked += [p for p in paths if p.is_file()][:want]
    return picked or files[:count]


def deletion_report(
    repository: Path,
    model_name: str,
    images: list[Path],
    out: Path,
    *,
    steps: int = 20,
    method: str = "grad-cam",
    target: str = "positive",
    seed: int = 0,
) -> dict[str, object]:
    """Write the deletion/insertion figure and figures for ``images``; return the summary."""
    manifest, model = load_served_model(repository, model_name)
    spec = manifest.preprocessing
    rng = np.random.default_rng(seed)
    cam_rows: list[Curves] = []
    rnd_rows: list[Curves] = []
    per_image = []
    for path in images:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        # The shared preprocessing (resize + normalise), as for a decoded DICOM.
        x = torch.from_numpy(normalise(resize(rgb, spec), spec))
        with torch.no_grad():
            logit = float(model(x[None])[0, 0])
        # The positive (malignant) class by default: for the negative class a blank, featureless
        # image already scores high, so removing pixels says little about the map.
        cls = int(logit >= 0) if target == "predicted" else 1
        heat = explain_batch(model, x[None], [cls], method).heatmaps[0].numpy()  # type: ignore[arg-type]
        c = curves(model, x, heat_order(heat, rng), cls, steps=steps, temperature=manifest.temperature)
        r = curves(model, x, random_order(heat.size, rng), cls, steps=steps, temperature=manifest.temperature)
        cam_rows.append(c)
        rnd_rows.append(r)
        per_image.append(
            {
                "image": path.name,
                "target": cls,
                "deletion_auc": c.deletion_auc,
                "deletion_auc_random": r.deletion_auc,
                "insertion_auc": c.insertion_auc,
                "insertion_auc_random": r.insertion_auc,
            }
        )
    fractions = cam_rows[0].fractions
    summary: dict[str, object] = {
        "model_name": manifest.name,
        "model_version": manifest.version,
        "placeholder_model": manifest.placeholder,
        "method": method,
        "target": target,
        "images": len(images),
        "steps": steps,
        "deletion_auc": float(np.mean([c.deletion_auc for c in cam_rows])),
        "deletion_auc_random": float(np.mean([c.deletion_auc for c in rnd_rows])),
        "insertion_auc": float(np.mean([c.insertion_auc for c in cam_rows])),
        "insertion_auc_random": float(np.mean([c.insertion_auc for c in rnd_rows])),
        "per_image": per_image,
    }
    fig = Figure(figsize=(10, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (kind, word) in enumerate((("deletion", "removed"), ("insertion", "restored"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(fractions, _mean(cam_rows, kind), label=f"{method} order (AUC {summary[kind + '_auc']:.3f})")
        ax.plot(
            fractions,
            _mean(rnd_rows, kind),
            "--",
            label=f"random order (AUC {summary[kind + '_auc_random']:.3f})",
        )
        ax.set_xlabel(f"fraction of pixels {word}, most attributed first")
        ax.set_ylabel(f"probability of the explained class ({target})")
        ax.set_ylim(0, 1)
        ax.set_title(f"{kind.capitalize()} ({'lower' if kind == 'deletion' else 'higher'} is more faithful)")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{manifest.name} v{manifest.version}{' (PLACEHOLDER)' if manifest.placeholder else ''}: "
        f"mean over {len(images)} images"
    )
    fig.text(0.5, 0.01, ASSISTIVE_LABEL, ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "deletion_insertion.png")
    (out / "deletion_insertion.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sightline_explain.report")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deletion", help="deletion/insertion curves vs a random-order baseline")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of .jpg/.png images")
    d.add_argument("-n", "--count", type=int, default=20)
    d.add_argument("--repository", type=Path, default=Path("model_repository"))
    d.add_argument("--model", default="derm-cnn")
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--method", choices=("grad-cam", "grad-cam++"), default="grad-cam")
    d.add_argument("--target", choices=("positive", "predicted"), default="positive")
    d.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    images = select_images(args.images, args.count)
    if not images:
        log.error("no images under the given folder")
        return 2
    summary = deletion_report(
        args.repository,
        args.model,
        images,
        args.out,
        steps=args.steps,
        method=args.method,
        target=args.target,
    )
    log.info(
        "deletion AUC %.3f (random %.3f), insertion AUC %.3f (random %.3f) over %d images; wrote %s",
        summary["deletion_auc"],
        summary["deletion_auc_random"],
        summary["insertion_auc"],
        summary["insertion_auc_random"],
        len(images),
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
