"""Find text burned into one image frame with a scene-text detector, then read only what it found.

Tesseract is a page reader: on textured images (dermoscopy, radiographs) it reads texture as
words and misses real words of low contrast, so a threshold on its confidence trades missed text
for false redactions (README, privacy section: 0.48 of characters found at the confidence that
alters 1% of clean photographs). A scene-text detector answers the question the policy asks,
*where is text*, without reading it:

- **Detect.** PP-OCRv4's text detector (a DBNet, Liao et al. 2020; PaddleOCR, Apache-2.0; the
  ONNX file shipped in this package, see ``resources/text_detector/SOURCE.md``, checked against
  its sha256 before use) gives each pixel a text probability at the frame's own resolution
  (large frames in overlapping tiles). Pixels above ``threshold`` form regions; a region whose
  mean probability reaches ``box_threshold`` is a text box, grown by DBNet's unclip rule
  (distance = area x ``unclip`` / perimeter, the shrink the network was trained with).
- **Blobs are checked.** A region taller than ``blob_fraction`` of the frame's shorter side and
  not wider than twice its height is more often a lesion or an organ than a word: Tesseract reads
  it, and only words it reads there with the recipe's confidence are kept as boxes.
- **Letters drawn alone** (a lone initial, a view code) are not a text line to the network: with
  ``characters`` set, :mod:`.lone_chars` looks for glyph-shaped regions inked in one value and
  has a recogniser confirm each one (boxes the detector already found are not read again).
- **Read for the keep patterns.** A box short enough to be a laterality marker is read by
  Tesseract as one line; its text is what the recipe's keep patterns see. A box read as nothing
  has no text, so no keep pattern matches it: it is blacked out (fail closed).

Only boxes come out (:class:`~.ocr.TextBox`); the policy lives in :mod:`.burned_in`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from sightline_deid.core.lone_chars import LoneCharacterFinder, LoneCharacterSettings
from sightline_deid.core.ocr import FrameUnreadable, OcrUnavailable, TesseractDetector, TextBox
from sightline_deid.core.onnx_models import checked_session, shipped

#: The shipped model (PP-OCRv4 det, from the rapidocr-onnxruntime 1.4.4 wheel) and its digest.
MODEL_FILE = "ppocr_v4_det.onnx"
MODEL_SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
#: Frames are read in tiles of this side (native resolution, bounded memory), overlapping by:
_TILE, _OVERLAP = 1024, 64
#: A box this many times wider than tall is not read for keep patterns (longer than "RIGHT").
_READ_MAX_ASPECT = 6.0
#: Pixels of the frame around a box given to Tesseract with it (it needs a border to read).
_READ_PAD = 4


def model_path() -> Path:
    return shipped(MODEL_FILE)


@dataclass(frozen=True)
class DetectorSettings:
    """DBNet post-processing (PaddleOCR's defaults) and the blob rule; see the module text."""

    threshold: float = 0.3
    box_threshold: float = 0.5
    unclip: float = 1.6
    blob_fraction: float = 0.3
    #: Frames with a shorter side below this are read enlarged to it (small text is missed).
    min_side: int = 0
    #: Also look for letters and digits drawn alone (:mod:`.lone_chars`); None: not looked for.
    characters: LoneCharacterSettings | None = None

    def __post_init__(self) -> None:
        if not (0 < self.threshold < 1 and 0 < self.box_threshold < 1):
            raise ValueError("text detector thresholds must lie between 0 and 1")
        if self.min_side < 0 or self.min_side > 2048:
            raise ValueError("text detector min_side must lie between 0 and 2048")
        if self.unclip < 0 or not 0 < self.blob_fraction <= 1:
            raise ValueError("text detector unclip must be >= 0 and blob_fraction in (0, 1]")


@dataclass
class DbnetDetector:
    """Text boxes from the DBNet detector; ``reader`` reads blobs and marker-sized boxes.

    ``read_text``: read boxes for keep patterns (off when the recipe keeps nothing: no Tesseract
    run at all on a box the detector is sure of).
    """

    settings: DetectorSettings
    reader: TesseractDetector
    read_text: bool = True
    max_frames: int = 64
    path: Path = field(default_factory=model_path)
    _session: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _characters: LoneCharacterFinder | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.settings.characters is not None:
            self._characters = LoneCharacterFinder(self.settings.characters)

    def available(self) -> bool:
        """Whether the models load (and match their digests) and Tesseract is installed."""
        try:
            self._model()
            if self._characters is not None:
                self._characters.load()
        except OcrUnavailable:
            return False
        return self.reader.available()

    def find_text(self, frame: NDArray[np.uint8]) -> list[TextBox]:
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError("expected an H x W uint8 frame")
        if not self.reader.available():
            # Without the reader a blob or a marker could not be checked: no frame is passed.
            raise OcrUnavailable("OCR engine is not installed")
        prob = self._probabilities(frame)
        regions, count = ndimage.label(
            ndimage.binary_dilation(prob > self.settings.threshold, structure=np.ones((2, 2), bool))
        )
        boxes: list[TextBox] = []
        shorter = min(frame.shape)
        for found in ndimage.find_objects(regions, count):
            if found is None:
                continue
            rows, cols = found
            height, width = rows.stop - rows.start, cols.stop - cols.start
            score = float(prob[found].mean())  # PaddleOCR's 'fast' box score: the box's mean
            if score < self.settings.box_threshold or min(height, width) < 2:
                continue
            grow = height * width * self.settings.unclip / (2 * (height + width))
            y0, x0 = max(0, int(rows.start - grow)), max(0, int(cols.start - grow))
            y1 = min(frame.shape[0], int(np.ceil(rows.stop + grow)))
            x1 = min(frame.shape[1], int(np.ceil(cols.stop + grow)))
            if (y1 - y0) > self.settings.blob_fraction * shorter and (x1 - x0) <= 2 * (y1 - y0):
                boxes.extend(self._words_in(frame, y0, x0, y1, x1))
                continue
            text = ""
            if self.read_text and (x1 - x0) <= _READ_MAX_ASPECT * (y1 - y0):
                text = " ".join(w.text for w in self._read(frame, y0, x0, y1, x1, line=True))
            boxes.append(TextBox(x0, y0, x1 - x0, y1 - y0, text, 100 * score))
        if self._characters is not None:
            boxes += self._characters.find(frame, boxes)
        return boxes

    def _words_in(self, frame: NDArray[np.uint8], y0: int, x0: int, y1: int, x1: int) -> list[TextBox]:
        """The words Tesseract reads in a blob region with the recipe's confidence (frame coordinates)."""
        return [
            w
            for w in self._read(frame, y0, x0, y1, x1, line=False)
            if w.confidence >= self.reader.min_confidence
        ]

    def _read(
        self, frame: NDArray[np.uint8], y0: int, x0: int, y1: int, x1: int, *, line: bool
    ) -> list[TextBox]:
        top, left = max(0, y0 - _READ_PAD), max(0, x0 - _READ_PAD)
        crop = np.ascontiguousarray(frame[top : y1 + _READ_PAD, left : x1 + _READ_PAD])
        words = self.reader.find_text(crop, psm=7 if line else 11)
        return [TextBox(w.x + left, w.y + top, w.width, w.height, w.text, w.confidence) for w in words]

    def _probabilities(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Per-pixel text probability at the frame's resolution (a frame whose shorter side is
        under ``min_side`` is read enlarged to it), tile by tile."""
        factor = self.settings.min_side / min(frame.shape)
        if factor > 1:
            size = (round(frame.shape[1] * factor), round(frame.shape[0] * factor))
            larger = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))
            prob = Image.fromarray(self._tiled(larger))
            return np.asarray(prob.resize((frame.shape[1], frame.shape[0]), Image.Resampling.BILINEAR))
        return self._tiled(frame)

    def _tiled(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        height, width = frame.shape
        prob = np.zeros(frame.shape, dtype=np.float32)
        step = _TILE - _OVERLAP
        for top in range(0, max(1, height - _OVERLAP), step):
            for left in range(0, max(1, width - _OVERLAP), step):
                tile = frame[top : top + _TILE, left : left + _TILE]
                window = prob[top : top + tile.shape[0], left : left + tile.shape[1]]
                np.maximum(window, self._tile(tile), out=window)
        return prob

    def _tile(self, tile: NDArray[np.uint8]) -> NDArray[np.float32]:
        height, width = tile.shape
        # The network takes sides that are multiples of 32: the tile is resized to the nearest.
        h32, w32 = max(32, round(height / 32) * 32), max(32, round(width / 32) * 32)
        image = Image.fromarray(tile)
        if (h32, w32) != (height, width):
            image = image.resize((w32, h32), Image.Resampling.BILINEAR)
        x = (np.asarray(image, dtype=np.float32) / 127.5 - 1.0)[np.newaxis, np.newaxis]
        session = self._model()
        out = session.run(None, {session.get_inputs()[0].name: np.repeat(x, 3, axis=1)})[0][0, 0]
        if (h32, w32) != (height, width):
            out = np.asarray(Image.fromarray(out).resize((width, height), Image.Resampling.BILINEAR))
        return np.asarray(out, dtype=np.float32)

    def _model(self) -> Any:
        with self._lock:
            if self._session is None:
                self._session = checked_session(self.path, MODEL_SHA256, "text detector model")
            return self._session


__all__ = ["MODEL_SHA256", "DbnetDetector", "DetectorSettings", "FrameUnreadable", "model_path"]
