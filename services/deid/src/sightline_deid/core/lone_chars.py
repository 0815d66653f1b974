"""Find letters and digits drawn alone, which a text-line detector does not see.

DBNet (:mod:`.text_detect`) was trained on lines of text: over a letter drawn on its own (a
laterality marker, a lone initial, a view code) its text probability stays near zero at any
size (README, privacy section: 9 of 25 lone letters found in the benchmark's draw). This stage
looks for them the other way round, glyph first:

- **Candidates.** Pixels darker or brighter than their local mean (a ``_WINDOW`` px box) by
  ``contrast`` grey levels form connected regions, and again at ``_LEVELS`` times that (a glyph
  that touches dark texture at one level stands apart at a higher one). A region is a candidate
  when it has the size and shape of a character (height ``_MIN_HEIGHT``-``_MAX_HEIGHT`` px, no
  wider than twice its height, ink covering 12-85% of its box) and is drawn like text, in one
  value with a sharp edge: at least ``uniformity`` of its pixels within 3 grey levels of its ink
  value, and an edge gradient of at least ``sharpness`` times its contrast
  (:func:`glyph_likeness`). Burned-in text is rendered in a flat colour; anatomy (a vertebra, a
  nodule) and skin texture are neither flat nor sharp-edged.
- **Confirmed by reading.** Each candidate, with a border, goes to PP-OCRv4's text recogniser
  (a CRNN with CTC output; PaddleOCR, Apache-2.0, shipped beside the detector with its sha256):
  it is a character when the recogniser reads exactly one letter or digit there and, at some
  position, the probability that a letter or digit is written reaches ``min_probability``
  (case and look-alikes such as O/0 do not split the vote).

A confirmed candidate becomes a :class:`~.ocr.TextBox` whose text is the character read, so the
recipe's keep patterns (``L``, ``R``) still see it. Candidates inside a box the line detector
already found are not read again.
"""

from __future__ import annotations

import itertools
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from sightline_deid.core.ocr import TextBox
from sightline_deid.core.onnx_models import checked_session, shipped

#: The shipped recogniser (PP-OCRv4 rec, from the rapidocr-onnxruntime 1.4.4 wheel) and its digest.
MODEL_FILE = "ppocr_v4_rec.onnx"
MODEL_SHA256 = "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
#: Side of the box whose mean is a pixel's local background.
_WINDOW = 31
#: Contrast levels, as multiples of the recipe's ``contrast``, at which regions are formed.
_LEVELS = (1.0, 2.0, 3.0, 4.5)
#: Height of a candidate glyph (px). The goal covers characters from 8 px, but below 10 px bone
#: the size of a digit in a 224 px radiograph was read as one (README): smaller text is the line
#: detector's.
_MIN_HEIGHT, _MAX_HEIGHT = 10, 96
#: Share of a candidate's box its ink covers: a solid block or a thin scratch is not a glyph.
_MIN_FILL, _MAX_FILL = 0.12, 0.85
#: The recogniser's input height, the widest crop given to it, and crops per run.
_HEIGHT, _WIDTH, _BATCH = 48, 96, 32
#: Border around a candidate given to the recogniser, as a share of its height.
_PAD = 0.35
ALNUM = frozenset(string.ascii_letters + string.digits)


def model_path() -> Path:
    return shipped(MODEL_FILE)


@dataclass(frozen=True)
class LoneCharacterSettings:
    """Candidate and confirmation thresholds; see the module text."""

    contrast: float = 20.0
    uniformity: float = 0.6
    sharpness: float = 0.35
    min_probability: float = 0.98

    def __post_init__(self) -> None:
        if not 0 < self.contrast < 255:
            raise ValueError("lone characters: contrast must lie between 0 and 255")
        if not (0 <= self.uniformity <= 1 and 0 <= self.sharpness <= 2 and 0 < self.min_probability < 1):
            raise ValueError(
                "lone characters: uniformity must lie in [0, 1], sharpness in [0, 2] and"
                " min_probability in (0, 1)"
            )

    @classmethod
    def from_recipe(cls, raw: Any) -> LoneCharacterSettings | None:
        """From a recipe's ``burned_in.ocr.dbnet.characters`` mapping; None (the stage off) when absent.
        ValueError on anything else, which the recipe loader reports as a RecipeError."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ValueError("characters must be a mapping of settings")
        names = [f.name for f in fields(cls)]
        if set(raw) - set(names):
            raise ValueError(f"characters: unknown settings {sorted(raw)}")
        defaults = cls()
        return cls(**{n: float(raw.get(n, getattr(defaults, n))) for n in names})


@dataclass
class LoneCharacterFinder:
    settings: LoneCharacterSettings
    path: Path = field(default_factory=model_path)
    _session: Any = field(default=None, init=False, repr=False)
    _alnum: NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp), init=False, repr=False)
    _chars: list[str] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def load(self) -> None:
        """Load the recogniser (checked against its digest); :class:`OcrUnavailable` if it cannot be."""
        self._model()

    def find(self, frame: NDArray[np.uint8], covered: list[TextBox]) -> list[TextBox]:
        """Characters drawn alone in ``frame`` outside the ``covered`` boxes."""
        boxes = [b for b in self.candidates(frame) if not _inside(b, covered)]
        found = []
        for start in range(0, len(boxes), _BATCH):
            batch = boxes[start : start + _BATCH]
            for (y0, x0, y1, x1), (text, probability) in zip(batch, self._read(frame, batch), strict=True):
                if text and probability >= self.settings.min_probability:
                    found.append(TextBox(x0, y0, x1 - x0, y1 - y0, text, 100 * probability))
        return found

    def candidates(self, frame: NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of every region shaped and inked like a character."""
        grey = frame.astype(np.float32)
        diff = grey - ndimage.uniform_filter(grey, _WINDOW)
        found: list[tuple[int, int, int, int]] = []
        for sign, level in itertools.product((1.0, -1.0), _LEVELS):
            if level * self.settings.contrast >= 255:
                continue
            regions, count = ndimage.label(
                sign * diff > level * self.settings.contrast, structure=np.ones((3, 3))
            )
            for index, region in enumerate(ndimage.find_objects(regions, count), start=1):
                if region is None:
                    continue
                rows, cols = region
                height, width = rows.stop - rows.start, cols.stop - cols.start
                if not (_MIN_HEIGHT <= height <= _MAX_HEIGHT and 2 <= width <= 2 * height):
                    continue
                ink = regions[region] == index
                if not _MIN_FILL <= float(ink.mean()) <= _MAX_FILL:
                    continue
                flatness, sharpness = glyph_likeness(frame, region, ink, sign)
                if flatness < self.settings.uniformity or sharpness < self.settings.sharpness:
                    continue
                box = (rows.start, cols.start, rows.stop, cols.stop)
                if not any(_same(box, other) for other in found):
                    found.append(box)
        return found

    def _read(
        self, frame: NDArray[np.uint8], boxes: list[tuple[int, int, int, int]]
    ) -> list[tuple[str, float]]:
        """For each box: the one letter or digit read there ("" otherwise) and the probability that
        a letter or digit is written at its most likely position."""
        crops = np.zeros((len(boxes), 3, _HEIGHT, _WIDTH), dtype=np.float32)
        for i, (y0, x0, y1, x1) in enumerate(boxes):
            pad = max(2, int(_PAD * (y1 - y0)))
            crop = frame[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad]
            width = max(8, min(_WIDTH, round(_HEIGHT * crop.shape[1] / crop.shape[0])))
            scaled = Image.fromarray(crop).resize((width, _HEIGHT), Image.Resampling.BILINEAR)
            crops[i, :, :, :width] = np.asarray(scaled, dtype=np.float32) / 127.5 - 1.0
        session = self._model()
        probs = session.run(None, {session.get_inputs()[0].name: crops})[0]  # N x T x classes
        best = probs.argmax(axis=2)
        alnum = probs[:, :, self._alnum].sum(axis=2).max(axis=1)
        out = []
        for row, probability in zip(best, alnum, strict=True):
            keep = np.ones(len(row), dtype=bool)
            keep[1:] = row[1:] != row[:-1]  # CTC: repeats merge, blanks (0) drop
            text = "".join(self._chars[j] for j in row[keep & (row != 0)])
            out.append((text if len(text) == 1 and text in ALNUM else "", float(probability)))
        return out

    def _model(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session, self._chars = _load(self.path)
                self._alnum = np.array([i for i, c in enumerate(self._chars) if c in ALNUM], dtype=np.intp)
            return self._session


def glyph_likeness(
    frame: NDArray[np.uint8], region: tuple[slice, slice], ink: NDArray[np.bool_], sign: float
) -> tuple[float, float]:
    """(flatness, sharpness) of one candidate region of ``frame``.

    Flatness: the share of its pixels within 3 grey levels of its ink value (the 90th percentile,
    the 10th for dark ink). Sharpness: the median gradient on its edge pixels over its contrast
    (ink value minus the median of the rest of its box): 0.50-0.51 for rendered bold glyphs, whose
    edge goes from background to ink within a pixel or two, 0.19-0.25 for the same glyphs blurred
    like bone (Gaussian, 2.5 px); their flatness 0.76-0.83 and 0.07-0.14.
    """
    rows, cols = region
    values = frame[region][ink].astype(np.float32)
    value = float(np.percentile(values, 90 if sign > 0 else 10))
    flatness = float((np.abs(values - value) <= 3).mean())
    rest = frame[region][~ink]
    contrast = abs(value - float(np.median(rest))) if rest.size else 0.0
    edge = ink & ~ndimage.binary_erosion(ink)
    if contrast < 1 or not edge.any():
        return flatness, 0.0
    top, left = max(0, rows.start - 2), max(0, cols.start - 2)
    around = frame[top : rows.stop + 2, left : cols.stop + 2].astype(np.float32)
    gy, gx = np.gradient(around)
    inner = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    return flatness, float(np.median(np.hypot(gy, gx)[inner][edge])) / contrast


def _same(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two boxes are one glyph found at two levels (intersection over union >= 0.8)."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter >= 0.8 * union


def _inside(box: tuple[int, int, int, int], covered: list[TextBox]) -> bool:
    y0, x0, y1, x1 = box
    return any(b.x <= x0 and b.y <= y0 and x1 <= b.x + b.width and y1 <= b.y + b.height for b in covered)


def _load(path: Path) -> tuple[Any, list[str]]:
    session = checked_session(path, MODEL_SHA256, "character recogniser")
    # The alphabet is in the model's metadata; CTC's blank is class 0 and a space the last class.
    alphabet = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    return session, ["", *alphabet, " "]


__all__ = ["MODEL_SHA256", "LoneCharacterFinder", "LoneCharacterSettings", "model_path"]
