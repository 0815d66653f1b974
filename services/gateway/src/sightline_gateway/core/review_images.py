"""The review workstation's two image layers, pixel-aligned: the model's view and its heatmap.

The model saw the centre square of the image (``shorter_side_center_crop``); the heatmap covers
that square. Both are rendered at the same display size so the browser can stack them and vary
only the heatmap's opacity.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from sightline_common.imaging import read_dicom, to_rgb_uint8

DISPLAY = 512
#: A perceptually ordered ramp (dark blue, teal, yellow, red) for the heatmap.
_RAMP = np.asarray([[48, 18, 59], [40, 120, 200], [30, 200, 160], [250, 220, 40], [200, 30, 30]], np.float32)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def model_view_png(dicom: bytes, square: bool = True) -> bytes:
    """The de-identified image, centre-cropped to a square as the model saw it, as a PNG."""
    rgb = to_rgb_uint8(read_dicom(dicom))
    h, w = rgb.shape[:2]
    if square:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        rgb = rgb[top : top + side, left : left + side]
    return _png(Image.fromarray(rgb).resize((DISPLAY, DISPLAY), Image.Resampling.BILINEAR))


def heatmap_png(npy: bytes) -> bytes:
    """A Grad-CAM heatmap (``.npy``, values in [0, 1]) as a colour PNG whose alpha follows the value."""
    heat: NDArray[np.floating[Any]] = np.load(io.BytesIO(npy), allow_pickle=False)
    if heat.ndim == 3:
        heat = heat.squeeze()
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError("heatmap is not a 2-D array")
    heat = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)
    position = heat * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    colour = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    alpha = (np.sqrt(heat) * 255.0)[..., None]
    rgba = np.concatenate([colour, alpha], axis=-1).round().astype(np.uint8)
    image = Image.fromarray(rgba, mode="RGBA").resize((DISPLAY, DISPLAY), Image.Resampling.BILINEAR)
    return _png(image)
