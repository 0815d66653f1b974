"""Benchmark: the burned-in text detector (deid's OCR) on generated text and on real images without text.

Generated: real backgrounds (dermoscopy and chest X-ray images from ``shared/datasets``, resized to
a random size between 224 and 640 px) and flat noisy ones, with 1-4 strings (names, dates, ids,
single letters) drawn at random places in random DejaVu fonts (sans, serif, mono, condensed,
bold, oblique), sizes and contrasts. The detector runs as the service runs it (the recipe's OCR
settings, line joining and margin) but without keep patterns, so every character counts. Printed:
recall of text pixels and of characters (a character counts as found when >= 95% of its ink is
blacked out) by the character's ink height, the non-text area blacked out, ms per frame.

Real images without text: HAM10000 dermoscopy and pediatric chest X-rays, run with the recipe's
keep patterns, as the service runs them. Printed: the share of images altered and the mean area
blacked out. Pediatric chest X-rays often carry burned-in laterality letters or labels: what the
detector found there (kept markers, blacked-out words) is counted separately, not as an error
of the detector.

Run from the repository root (needs ``make tools`` for tesseract and the fonts):
``.venv/bin/python -m benchmarks.bench_burned_in_ocr [generated] [clean-per-dataset] [seed]``;
``--without-characters`` runs the recipe with its lone-character stage off (recipe 1.8's detector).
It prints figures and does not fail on them.
"""

from __future__ import annotations

import csv
import random
import re
import string
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from sightline_deid.core import burned_in
from sightline_deid.core.ocr import TesseractDetector, TextBox, TextDetector
from sightline_deid.core.recipe import OcrPolicy, load_recipe

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
BUCKETS = ((0, 8), (8, 12), (12, 20), (20, 1000))
FOUND_SHARE = 0.95


@dataclass
class Glyph:
    """One drawn character: its ink mask (in image coordinates), its ink height, and whether it
    was drawn alone (a one-character string: no neighbours for a word detector to join it to)."""

    mask: NDArray[np.bool_]
    height: int
    alone: bool = False


def dataset_images(name: str, limit: int, rng: random.Random) -> list[Path]:
    folder = DATASETS / name
    with (folder / "metadata.csv").open() as f:
        rows = [folder / row["image"] for row in csv.DictReader(f)]
    rng.shuffle(rows)
    return rows[:limit]


def grey(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def random_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        surname = rng.choice(["DOE", "SMITH", "MULLER", "NGUYEN", "Garcia", "Okafor"])
        return f"{surname}^{rng.choice(['JANE', 'John', 'A'])}"
    if kind == 1:
        return f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1930, 2025)}"
    if kind == 2:
        return f"{rng.choice(['MRN', 'ID', 'Acc'])} {rng.randint(10000, 9999999)}"
    if kind == 3:
        return rng.choice(string.ascii_uppercase)
    if kind == 4:
        return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(2, 12)))
    return rng.choice(["St Mary Hospital", "Dr K Hand", "PORTABLE AP", "12:41:07", "F 46Y"])


def background(rng: random.Random, reals: list[Path]) -> NDArray[np.uint8]:
    w, h = rng.randint(224, 640), rng.randint(224, 640)
    if reals and rng.random() < 0.7:
        with Image.open(rng.choice(reals)) as im:
            return np.asarray(im.convert("L").resize((w, h), Image.Resampling.BICUBIC))
    base = np.full((h, w), rng.randint(0, 255), dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.choice([2, 6, 12]), (h, w))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def draw_text(
    img: NDArray[np.uint8], rng: random.Random, fonts: list[Path]
) -> tuple[NDArray[np.uint8], list[Glyph]]:
    """``img`` with 1-4 strings drawn on it, and every drawn character's ink."""
    canvas = Image.fromarray(img.copy())
    h, w = img.shape
    glyphs: list[Glyph] = []
    taken = np.zeros((h, w), dtype=bool)
    for _ in range(rng.randint(1, 4)):
        text = random_text(rng)
        font = ImageFont.truetype(str(rng.choice(fonts)), rng.randint(9, 48))
        left, top, right, bottom = font.getbbox(text)
        if right - left >= w - 4 or bottom - top >= h - 4:
            continue
        x, y = rng.randint(2, w - (right - left) - 2) - left, rng.randint(2, h - (bottom - top) - 2) - top
        box = taken[max(0, y + top - 4) : y + bottom + 4, max(0, x + left - 4) : x + right + 4]
        if box.any():
            continue  # strings do not overlap: each character's ink stays its own
        box[...] = True
        region = img[max(0, y + top) : y + bottom, max(0, x + left) : x + right]
        local = float(np.median(region)) if region.size else 128.0
        contrast = rng.choice([48, 80, 128, 200])
        fill = int(local + contrast) if local + contrast <= 255 else int(local - contrast)
        fill = int(np.clip(fill, 0, 255))
        for i, char in enumerate(text):
            if not char.strip():
                continue
            layer = Image.new("L", (w, h), 0)
            ImageDraw.Draw(layer).text((x + font.getlength(text[:i]), y), char, fill=255, font=font)
            ink = np.asarray(layer) > 127
            if ink.any():
                rows = np.nonzero(ink.any(axis=1))[0]
                glyphs.append(Glyph(ink, int(rows[-1] - rows[0] + 1), alone=len(text.strip()) == 1))
        ImageDraw.Draw(canvas).text((x, y), text, fill=fill, font=font)
    return np.asarray(canvas), glyphs


def redaction(
    shape: tuple[int, ...],
    boxes: list[TextBox],
    margin: float,
    threshold: float,
    keep: tuple[re.Pattern[str], ...] = (),
) -> tuple[NDArray[np.bool_], int, int]:
    """(blacked-out mask, words blacked out, words kept) as the service would do it at ``threshold``."""
    confident = [b for b in boxes if b.confidence >= threshold]
    found = [b for b in confident if not burned_in.is_kept(b.text, keep)]
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in burned_in.black_out_rects(found, margin):
        mask[y0:y1, x0:x1] = True
    return mask, len(found), len(confident) - len(found)


def timed(detector: TextDetector, frame: NDArray[np.uint8]) -> tuple[list[TextBox], float]:
    start = time.perf_counter()
    boxes = detector.find_text(frame)
    return boxes, time.perf_counter() - start


def bucket(height: int) -> str:
    for low, high in BUCKETS:
        if low <= height < high:
            return f"{low}-{high - 1}px" if high < 1000 else f">={low}px"
    return "?"


def text_figures(
    samples: list[tuple[str, NDArray[np.uint8], list[Glyph], list[TextBox]]], margin: float, threshold: float
) -> str:
    """Recall of characters and text pixels, and the non-text area blacked out, at ``threshold``."""
    chars: dict[str, list[int]] = {}
    kinds: dict[str, list[int]] = {}
    strings: dict[str, list[int]] = {}
    ink_total = ink_hit = 0
    false_area: list[float] = []
    for kind, img, glyphs, boxes in samples:
        mask, _, _ = redaction(img.shape, boxes, margin, threshold)
        ink = np.zeros(img.shape, dtype=bool)
        for glyph in glyphs:
            found = float(mask[glyph.mask].mean()) >= FOUND_SHARE
            alone = "a character alone" if glyph.alone else "characters in strings"
            for key, table in ((bucket(glyph.height), chars), (kind, kinds), (alone, strings)):
                if table is not chars and glyph.height < 8:
                    continue
                hit, total = table.get(key, [0, 0])
                table[key] = [hit + found, total + 1]
            ink |= glyph.mask
            ink_total += int(glyph.mask.sum())
            ink_hit += int((mask & glyph.mask).sum())
        # Non-text area: away from any ink by more than 7 px (the expected margin).
        near = np.asarray(Image.fromarray(ink.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(15))) > 0
        false_area.append(float((mask & ~near).sum()) / max(1, int((~near).sum())))
    at8 = [chars.get(bucket(h), [0, 0]) for h in (8, 12, 20)]
    hit8, total8 = sum(f for f, _ in at8), sum(t for _, t in at8)
    by_height = ", ".join(f"{k} {f}/{t}" for k, (f, t) in sorted(chars.items()))
    by_kind = ", ".join(f"{k} {f / max(1, t):.3f}" for k, (f, t) in sorted(kinds.items()))
    by_string = ", ".join(f"{k} {f}/{t} = {f / max(1, t):.3f}" for k, (f, t) in sorted(strings.items()))
    return (
        f"characters >= 8 px {hit8 / max(1, total8):.3f} (goal >= 0.99), text pixels "
        f"{ink_hit / max(1, ink_total):.3f}, non-text area blacked out {float(np.mean(false_area)):.4f}\n"
        f"      by ink height: {by_height}\n      >= 8 px by background: {by_kind}\n"
        f"      >= 8 px by string: {by_string}"
    )


def clean_figures(
    results: list[tuple[tuple[int, ...], list[TextBox]]], policy: OcrPolicy, threshold: float
) -> str:
    altered = kept_images = words = 0
    areas = []
    for shape, boxes in results:
        mask, found, kept = redaction(shape, boxes, policy.margin, threshold, policy.keep)
        altered += bool(found)
        kept_images += bool(kept)
        words += found
        areas.append(float(mask.mean()))
    return (
        f"altered {altered}/{len(results)} = {altered / max(1, len(results)):.3f} (goal < 0.01), words "
        f"blacked out {words}, mean area {float(np.mean(areas)):.4f}, images with a kept laterality "
        f"marker {kept_images}"
    )


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--without-characters"]
    generated = int(args[0]) if len(args) > 0 else 80
    clean = int(args[1]) if len(args) > 1 else 100
    rng = random.Random(int(args[2]) if len(args) > 2 else 7)
    if not TesseractDetector.available():
        raise SystemExit("tesseract is not installed: run `make tools` (scripts/get-tesseract.sh)")
    fonts = sorted(
        p for p in FONT_DIR.glob("DejaVu*.ttf") if "Math" not in p.name and "ExtraLight" not in p.name
    )
    if not fonts:
        raise SystemExit("no DejaVu fonts: run `make tools` (scripts/get-tesseract.sh)")
    recipe = load_recipe("sightline-basic")
    policy = recipe.burned_in.ocr
    if "--without-characters" in sys.argv:
        policy = replace(policy, dbnet=replace(policy.dbnet, characters=None))
    # The recipe's detector as the service runs it (its boxes are final: threshold 0 below), and,
    # for comparison, Tesseract alone with every box whatever its confidence (thresholds below).
    detectors: dict[str, tuple[TextDetector, list[float]]] = {
        f"recipe ({policy.detector})": (burned_in.detector_for(policy), [0.0]),
        "tesseract alone": (
            TesseractDetector(passes=policy.passes, scale=policy.scale, min_confidence=0.0),
            sorted({0.0, 70.0, 80.0, 90.0, policy.min_confidence}),
        ),
    }
    print(
        f"recipe {recipe.label}: detector={policy.detector} {policy.dbnet}; tesseract passes="
        f"{','.join(policy.passes)} scale={policy.scale} min_confidence={policy.min_confidence:g} "
        f"margin={policy.margin:g}; {len(fonts)} fonts"
    )

    reals = dataset_images("ham10000", 200, rng) + dataset_images("chest_xray_pneumonia", 200, rng)
    drawn = []
    for _ in range(generated):
        real = bool(reals) and rng.random() < 0.7
        img, glyphs = draw_text(background(rng, reals if real else []), rng, fonts)
        drawn.append(("real-image background" if real else "flat noisy background", img, glyphs))
    cleans = {
        name: [grey(p) for p in dataset_images(name, clean, random.Random(rng.random()))]
        for name in ("ham10000", "chest_xray_pneumonia")
    }
    for label, (detector, thresholds) in detectors.items():
        times: list[float] = []
        samples = []
        for kind, img, glyphs in drawn:
            # Generated text is judged without keep patterns (redaction()): every character counts.
            boxes, seconds = timed(detector, img)
            times.append(seconds)
            samples.append((kind, img, glyphs, boxes))
        print(
            f"\n{label}: generated images with text: {generated}, 224-640 px a side; ms per frame: "
            f"median {1000 * float(np.median(times)):.0f}, p90 {1000 * float(np.percentile(times, 90)):.0f}"
        )
        for threshold in thresholds:
            print(
                f"  min_confidence {threshold:>3g}: {text_figures(samples, policy.margin, threshold)}",
                flush=True,
            )
        for name, frames in cleans.items():
            secs, results = [], []
            for frame in frames:
                boxes, seconds = timed(detector, frame)
                secs.append(seconds)
                results.append((frame.shape, boxes))
            print(
                f"  real images without text, {name}: {len(frames)}, ms per frame: median "
                f"{1000 * float(np.median(secs)):.0f}"
            )
            for threshold in thresholds:
                print(
                    f"    min_confidence {threshold:>3g}: {clean_figures(results, policy, threshold)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
