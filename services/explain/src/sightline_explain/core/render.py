"""What a clinician sees: the heatmap as an array, an overlay PNG, and summary figures."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

#: Printed on every overlay: the heatmap is an aid to reading the model, not a finding.
ASSISTIVE_LABEL = "AI-generated, assistive, not a diagnosis"
COLORMAP = "jet"
ALPHA = 0.45


@dataclass(frozen=True)
class HeatmapSummary:
    """Peak location (relative, 0 = top/left) and the share of the image with heat >= ``level``."""

    peak_row: float
    peak_col: float
    fraction_above: float
    level: float = 0.5


def summarise(heat: NDArray[np.floating[Any]], level: float = 0.5) -> HeatmapSummary:
    h, w = heat.shape
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return HeatmapSummary(
        peak_row=float(r) / max(1, h - 1),
        peak_col=float(c) / max(1, w - 1),
        fraction_above=float((heat >= level).mean()),
        level=level,
    )


def heatmap_npy(heat: NDArray[np.floating[Any]]) -> bytes:
    """The heatmap as a float16 ``.npy`` file (values in [0, 1], model input size)."""
    buf = io.BytesIO()
    np.save(buf, heat.astype(np.float16), allow_pickle=False)
    return buf.getvalue()


#: The overlay's canvas and where its parts go (pixels; the layout the Matplotlib figure had).
CANVAS = (500, 440)
IMAGE_BOX = (20, 44, 380, 387)  # left, top, right, bottom
BAR_BOX = (400, 44, 420, 387)
TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LABEL_RED = (176, 0, 32)


def _jet_lut() -> NDArray[np.uint8]:
    """The colormap as a 256-entry RGB table (Matplotlib's own, sampled once)."""
    from matplotlib import colormaps

    rgba = np.asarray(colormaps[COLORMAP](np.linspace(0.0, 1.0, 256)), np.float64)
    return np.asarray(rgba[:, :3] * 255.0 + 0.5, np.uint8)


_LUT = _jet_lut()
_fonts = threading.local()  # FreeType faces per thread: replicas render in worker threads


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with Matplotlib) at ``size`` px."""
    cache: dict[tuple[int, bool], ImageFont.FreeTypeFont] = _fonts.__dict__.setdefault("faces", {})
    key = (size, bold)
    if key not in cache:
        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        cache[key] = ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    return cache[key]


def _coloured(heat: NDArray[np.floating[Any]]) -> NDArray[np.uint8]:
    return _LUT[(np.clip(heat, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)]


def overlay_image(rgb: NDArray[np.uint8], heat: NDArray[np.floating[Any]], *, title: str = "") -> Image.Image:
    """The image with the heatmap blended over it (bilinear, ``ALPHA``), a colour legend with
    ticks, the title, and the assistive-use label on a red band at the bottom.

    Drawn with Pillow on arrays (about 7 ms here, and 10 ms to encode the PNG), where the same
    picture through Matplotlib's figure machinery took 130-160 ms: most of an explanation's cost.
    """
    canvas = Image.new("RGB", CANVAS, "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = IMAGE_BOX
    h, w = rgb.shape[:2]
    scale = min((right - left) / w, (bottom - top) / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float32)
    heat_big = np.asarray(
        Image.fromarray(np.asarray(heat, np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    )
    blended = base * (1.0 - ALPHA) + _coloured(heat_big).astype(np.float32) * ALPHA
    at = (left + (right - left - size[0]) // 2, top + (bottom - top - size[1]) // 2)
    canvas.paste(Image.fromarray((blended + 0.5).astype(np.uint8)), at)
    if title:
        draw.text(((left + right) / 2, at[1] - 6), title, fill="black", font=_font(12), anchor="md")

    bar_left, bar_top, bar_right, bar_bottom = BAR_BOX
    ramp = np.linspace(1.0, 0.0, bar_bottom - bar_top)[:, None].repeat(bar_right - bar_left, axis=1)
    canvas.paste(Image.fromarray(_coloured(ramp)), (bar_left, bar_top))
    draw.rectangle((bar_left, bar_top, bar_right - 1, bar_bottom - 1), outline="black")
    for tick in TICKS:
        y = round(bar_bottom - 1 - tick * (bar_bottom - bar_top - 1))
        draw.line((bar_right, y, bar_right + 3, y), fill="black")
        draw.text((bar_right + 5, y), f"{tick:.1f}", fill="black", font=_font(10), anchor="lm")
    legend = "relative contribution (Grad-CAM)"
    font = _font(11)
    x0, y0, x1, y1 = (round(v) for v in draw.textbbox((0, 0), legend, font=font))
    strip = Image.new("RGB", (x1 - x0 + 2, y1 - y0 + 4), "white")
    ImageDraw.Draw(strip).text((1 - x0, 2 - y0), legend, fill="black", font=font)
    rotated = strip.rotate(90, expand=True)
    canvas.paste(rotated, (bar_right + 32, (bar_top + bar_bottom - rotated.height) // 2))

    font = _font(14, bold=True)
    centre = (CANVAS[0] / 2, CANVAS[1] - 15)
    box = draw.textbbox(centre, ASSISTIVE_LABEL, font=font, anchor="mm")
    draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=LABEL_RED)
    draw.text(centre, ASSISTIVE_LABEL, fill="white", font=font, anchor="mm")
    return canvas


def overlay_png(rgb: NDArray[np.uint8], heat: NDArray[np.floating[Any]], *, title: str = "") -> bytes:
    buf = io.BytesIO()
    overlay_image(rgb, heat, title=title).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
