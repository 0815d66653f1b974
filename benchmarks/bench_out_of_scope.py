"""How well the served out-of-scope score separates a model's test split from images it must flag.

The out-of-scope set (built here, nothing committed):
- other modalities as a photograph would carry them: every pydicom and pydicom-data test image
  with pixel data, decoded to RGB as the preprocessing does, near-duplicates (one image in several
  transfer syntaxes) removed by an 8x8 average hash;
- the other reference model's images (a random sample of the shared test split): chest X-rays
  for a skin model, dermoscopy photographs for a chest model;
- non-dermoscopic photographs: random crops of the three natural photographs shipped offline
  (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg): few sources, so
  this kind's figure is indicative only;
- degraded test images: each test image blurred (Gaussian, sigma 1 px and 3 px at the 112 px
  input, about 5 and 15 px on the original), over-exposed (x2.2, clipped) and under-exposed
  (x0.35).

Scores come from the served ONNX artifact (sha256 checked against the manifest), the same graph
Triton runs. Prints the AUROC (out-of-scope positive) with a stratified bootstrap 95% CI, per-kind
AUROC and flag rates at the manifest's threshold, the test split's flag rate per site, the AUROC
of the maximum softmax probability as a baseline, and (from ``model.pt`` and the fitted
statistics) each part of the score alone: the feature distance and the input's blur.
``--write-manifest`` stores the figures in the manifest's ``out_of_scope.evaluation`` (the
model card reads them).

    .venv/bin/python -m benchmarks.bench_out_of_scope [--model derm-cnn] [--write-manifest]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from PIL import Image, ImageFilter
from sightline_common.imaging import resize, to_rgb_uint8
from sightline_common.manifest import ModelManifest, PreprocessSpec, load_manifest
from sklearn.metrics import roc_auc_score

from sightline.ml import data as ds
from sightline.ml.inference import onnx_session
from sightline.ml.prediction import model_inputs

SEED = 0


def _ahash(img: NDArray[np.uint8]) -> bytes:
    small = np.asarray(
        Image.fromarray(img).convert("L").resize((8, 8), Image.Resampling.BILINEAR), np.float32
    )
    return np.packbits(small > small.mean()).tobytes()


def other_modalities(spec: PreprocessSpec) -> tuple[NDArray[np.uint8], list[str]]:
    """Unique images of pydicom's and pydicom-data's test files, decoded as preprocess decodes."""
    import warnings

    import pydicom
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # pydicom-data

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    seen: set[bytes] = set()
    images, names = [], []
    for path in sorted(p for r in roots for p in r.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds_ = pydicom.dcmread(path, force=True)
                if "PixelData" not in ds_ or int(ds_.get("Rows", 0)) < 32 or int(ds_.get("Columns", 0)) < 32:
                    continue
                rgb = to_rgb_uint8(ds_)
        except Exception:  # noqa: BLE001 - a test file no decoder reads is simply not in the set
            continue
        img = resize(rgb, spec)
        key = _ahash(img)
        if key in seen or img.std() < 2:  # duplicates and blank frames
            continue
        seen.add(key)
        images.append(img)
        names.append(f"{ds_.get('Modality', '?')}:{path.name}")
    return np.stack(images), names


def other_dataset(name: str, spec: PreprocessSpec, n: int) -> NDArray[np.uint8]:
    """A random sample of another shared dataset's test split (the other model's images)."""
    root = ds.shared_dataset(name)
    meta = pd.read_csv(root / "metadata.csv")
    meta = meta[meta["split"] == "test"] if "split" in meta.columns else meta
    rows = meta.sample(min(n, len(meta)), random_state=SEED)
    return np.stack([resize(ds.decode_rgb(root / rel), spec) for rel in rows["image"]])


def photographs(spec: PreprocessSpec, crops_each: int) -> NDArray[np.uint8]:
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    sources = list(load_sample_images().images)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        sources.append(np.asarray(Image.open(fh).convert("RGB")))
    rng = np.random.default_rng(SEED)
    out = []
    for src in sources:
        h, w = src.shape[:2]
        for _ in range(crops_each):
            side = int(rng.uniform(0.3, 1.0) * min(h, w))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append(resize(np.ascontiguousarray(src[y : y + side, x : x + side]), spec))
    return np.stack(out)


def degrade(images: NDArray[np.uint8], kind: str) -> NDArray[np.uint8]:
    if kind.startswith("blurred"):
        radius = 1 if "slightly" in kind else 3
        return np.stack(
            [np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(radius))) for im in images]
        )
    factor = {"over-exposed": 2.2, "under-exposed": 0.35}[kind]
    return np.clip(images.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def served_outputs(
    repository: Path, manifest: ModelManifest, images: NDArray[np.uint8], batch: int = 128
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(logits, out-of-scope scores) from the served ONNX, as Triton computes them."""
    session = onnx_session(repository, manifest)
    inputs = model_inputs(images, manifest.preprocessing)
    logits, scores = [], []
    for i in range(0, len(inputs), batch):
        z, s = session.run(None, {session.get_inputs()[0].name: inputs[i : i + batch]})
        logits.append(z[:, 0])
        scores.append(s[:, 0])
    return np.concatenate(logits).astype(np.float64), np.concatenate(scores).astype(np.float64)


def parts_alone(
    repository: Path, manifest: ModelManifest, images: NDArray[np.uint8]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each part of the score, scaled as served (1.0 at its validation quantile): distance, blur."""
    from sightline_explain.core.nets import load_checkpoint

    from sightline.ml.out_of_scope import OutOfScopeStats, pooled_features

    assert manifest.out_of_scope is not None
    stats = OutOfScopeStats.load(repository / manifest.name / manifest.out_of_scope.artifact)
    net = load_checkpoint(
        str(repository / manifest.name / f"{manifest.version}/model.pt"), manifest.architecture
    )
    _, feats, sharp = pooled_features(
        net, model_inputs(images, manifest.preprocessing), manifest.preprocessing
    )
    ref, median, low = (float(v) for v in stats.parts)
    return stats.distance(feats) / ref, (median - sharp) / (median - low)


def auroc_ci(
    inside: NDArray[np.float64], outside: NDArray[np.float64], n_boot: int
) -> tuple[float, float, float]:
    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    point = float(roc_auc_score(y, np.r_[inside, outside]))
    rng = np.random.default_rng(SEED)
    boots = [
        roc_auc_score(y, np.r_[rng.choice(inside, len(inside)), rng.choice(outside, len(outside))])
        for _ in range(n_boot)
    ]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return point, float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model", default="derm-cnn")
    parser.add_argument("--dataset", default=None, help="default: the model's training dataset")
    parser.add_argument("--others", type=int, default=300, help="images of the other model's dataset")
    parser.add_argument("--crops", type=int, default=10, help="crops per natural photograph")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--write-manifest", action="store_true")
    args = parser.parse_args()

    manifest = load_manifest(args.repository, args.model)
    if manifest.out_of_scope is None:
        raise SystemExit(f"{args.model} has no out-of-scope score: run `sightline fit-out-of-scope` first")
    spec = manifest.preprocessing
    threshold = manifest.out_of_scope.threshold
    group = str(manifest.training_data.get("group_column", "lesion_id"))
    root = ds.dataset_root(args.dataset or manifest.training_data.get("config", {}).get("dataset"))
    data = ds.load_dataset(
        root, spec, cache_dir=args.cache_dir, required=ds.training_columns(group, []), group_column=group
    )
    test = ds.select(data, ["test"])

    sets: dict[str, NDArray[np.uint8]] = {}
    modalities, names = other_modalities(spec)
    sets["other modality (pydicom test images)"] = modalities
    if spec.colour == "RGB":
        sets["chest X-ray"] = other_dataset("chest_xray_pneumonia", spec, args.others)
    else:
        sets["dermoscopy photograph"] = other_dataset("ham10000", spec, args.others)
    sets["natural photograph (crops)"] = photographs(spec, args.crops)
    for kind in ("blurred (slightly, sigma 1 px)", "blurred", "over-exposed", "under-exposed"):
        sets[f"{kind} test image"] = degrade(test.images, kind)

    test_logits, test_scores = served_outputs(args.repository, manifest, test.images)
    y = np.r_[np.zeros(len(test_scores)), np.ones(sum(len(v) for v in sets.values()))]
    scored = {k: served_outputs(args.repository, manifest, v) for k, v in sets.items()}
    outside = np.concatenate([s for _, s in scored.values()])
    outside_logits = np.concatenate([z for z, _ in scored.values()])
    auc, lo, hi = auroc_ci(test_scores, outside, args.bootstrap)

    def msp(z: NDArray[np.float64]) -> NDArray[np.float64]:
        p = 1.0 / (1.0 + np.exp(-z))
        return -np.maximum(p, 1 - p)  # higher = less confident = more out of scope

    msp_auc = float(roc_auc_score(y, np.r_[msp(test_logits), msp(outside_logits)]))
    test_flag = float((test_scores > threshold).mean())
    all_images = np.concatenate([test.images, *sets.values()])
    dist, blur = parts_alone(args.repository, manifest, all_images)
    n_test = len(test_scores)
    part_auroc = {
        name: round(float(roc_auc_score(y, part)), 4) for name, part in (("distance", dist), ("blur", blur))
    }
    part_kinds: dict[str, dict[str, float]] = {}
    start = n_test
    for kind, imgs in sets.items():
        sl = slice(start, start + len(imgs))
        yk = np.r_[np.zeros(n_test), np.ones(len(imgs))]
        part_kinds[kind] = {
            name: round(float(roc_auc_score(yk, np.r_[part[:n_test], part[sl]])), 4)
            for name, part in (("distance", dist), ("blur", blur))
        }
        start += len(imgs)
    print(f"{args.model} v{manifest.version}: out-of-scope threshold {threshold}")
    print(f"in distribution: test split, {len(test_scores)} images, flagged {test_flag:.3f}")
    print(f"out of scope: {len(outside)} images")
    print(f"AUROC (test vs out-of-scope) {auc:.4f} (95% CI {lo:.4f}-{hi:.4f}, {args.bootstrap} resamples)")
    print(f"baseline, maximum softmax probability: AUROC {msp_auc:.4f}")
    print(
        f"each part alone: feature distance AUROC {part_auroc['distance']:.4f}, blur {part_auroc['blur']:.4f}"
    )
    kinds: dict[str, Any] = {}
    print(f"{'kind':<40}{'n':>6}{'AUROC':>8}{'flagged':>9}{'distance':>10}{'blur':>8}")
    for kind, (_, s) in scored.items():
        k_auc = float(
            roc_auc_score(np.r_[np.zeros(len(test_scores)), np.ones(len(s))], np.r_[test_scores, s])
        )
        rate = float((s > threshold).mean())
        kinds[kind] = {
            "n": len(s),
            "auroc": round(k_auc, 4),
            "flagged": round(rate, 4),
            "parts": part_kinds[kind],
        }
        pk = part_kinds[kind]
        print(f"{kind:<40}{len(s):>6}{k_auc:>8.4f}{rate:>9.3f}{pk['distance']:>10.4f}{pk['blur']:>8.4f}")
    by_site = {
        str(site): round(float((test_scores[(test.meta["site"] == site).to_numpy()] > threshold).mean()), 4)
        for site in sorted(test.meta["site"].unique())
    }
    print("test split flagged per site:", json.dumps(by_site))
    evaluation = {
        "command": "python -m benchmarks.bench_out_of_scope --model " + args.model,
        "in_distribution": {"split": "test", "n": len(test_scores), "flagged": round(test_flag, 4)},
        "test_flagged_by_site": by_site,
        "out_of_scope_n": len(outside),
        "auroc": round(auc, 4),
        "auroc_ci95": [round(lo, 4), round(hi, 4)],
        "bootstrap": f"{args.bootstrap} resamples, stratified (test and out-of-scope resampled apart)",
        "msp_baseline_auroc": round(msp_auc, 4),
        "parts_alone_auroc": part_auroc,
        "kinds": kinds,
        "other_modality_files": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16],
    }
    if args.write_manifest:
        path = args.repository / args.model / "manifest.json"
        raw = json.loads(path.read_text())
        raw["out_of_scope"]["evaluation"] = evaluation
        path.write_text(json.dumps(raw, indent=2) + "\n")
        print(f"wrote out_of_scope.evaluation to {path}")


if __name__ == "__main__":
    main()
