"""Fixtures for the observability tests: generated skin-lesion-like images and their shifts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[3]

Shift = Callable[[Image.Image], Image.Image]


def lesion_image(rng: np.random.Generator, height: int = 150, width: int = 200) -> Image.Image:
    """A dermoscopy-like picture: textured skin, a darker irregular lesion, a vignette."""
    skin = np.asarray([205, 155, 135], np.float32) + rng.normal(0, 12, 3)
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    arr = np.clip(skin[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    rx, ry = rng.uniform(0.12, 0.3) * width, rng.uniform(0.12, 0.3) * height
    tone = tuple(int(v) for v in np.clip(skin * rng.uniform(0.35, 0.7), 0, 255))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tone)
    for _ in range(int(rng.integers(3, 9))):  # irregular border, dots
        x, y = cx + rng.normal(0, rx / 2), cy + rng.normal(0, ry / 2)
        r = rng.uniform(2, 10)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(t * 0.8) for t in tone))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))


def as_rgb(image: Image.Image) -> NDArray[np.uint8]:
    return np.asarray(image.convert("RGB"), np.uint8)


def darker(image: Image.Image) -> Image.Image:
    return Image.fromarray((as_rgb(image).astype(np.float32) * 0.7).astype(np.uint8))


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(2.5))


def colour_cast(image: Image.Image) -> Image.Image:
    arr = as_rgb(image).astype(np.float32) * np.asarray([0.85, 1.0, 1.2], np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


SHIFTS: dict[str, Shift] = {"darker": darker, "blurred": blurred, "colour_cast": colour_cast}
