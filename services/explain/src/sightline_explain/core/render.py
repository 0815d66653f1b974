"""What a clinician sees: the heatmap as an array, an overlay PNG, and summary figures."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray

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


def overlay_figure(rgb: NDArray[np.uint8], heat: NDArray[np.floating[Any]], *, title: str = "") -> Figure:
    """The image with the heatmap blended over it, a colour legend and the assistive-use label.

    Uses the object-oriented Agg API (no pyplot state), so replicas can render in threads.
    """
    fig = Figure(figsize=(5.0, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.04, 0.12, 0.72, 0.78))
    ax.imshow(rgb, interpolation="bilinear")
    im = ax.imshow(heat, cmap=COLORMAP, alpha=ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    cax = fig.add_axes((0.80, 0.12, 0.04, 0.78))
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("relative contribution (Grad-CAM)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.text(
        0.5,
        0.035,
        ASSISTIVE_LABEL,
        ha="center",
        va="center",
        fontsize=10,
        fontweight="bold",
        color="white",
        bbox={"facecolor": "#b00020", "edgecolor": "none", "pad": 3},
    )
    return fig


def overlay_png(rgb: NDArray[np.uint8], heat: NDArray[np.floating[Any]], *, title: str = "") -> bytes:
    fig = overlay_figure(rgb, heat, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
