"""Find text burned into one image frame: word boxes from Tesseract OCR.

Debian's ``tesseract-ocr`` (5.x, English data installed with it: nothing is downloaded at run
time) runs in sparse-text mode (``--psm 11``), which looks for words anywhere in the frame rather
than for a page layout. The frame goes to it through a pipe (``stdin``, as uncompressed PGM) and
the word boxes come back on ``stdout``: identified pixels are never written to a file (the
``pytesseract`` wrapper writes every image to a temporary file, so it is not used). Each
configured pass sees the frame differently and the boxes of all passes are united:

- ``plain``: the frame as 8-bit grey, upscaled by ``scale`` (small text reads better larger);
- ``background``: the absolute difference between the frame and its local background (a box
  blur), stretched and inverted, so text of either polarity and of low contrast against a
  textured image becomes dark text on white.

Only boxes are used (their text serves the recipe's keep patterns). The policy of what to do with
them lives in :mod:`.burned_in`; this module knows nothing about DICOM.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

PASSES = ("plain", "background")
#: Tesseract refuses images wider or taller than this.
_TESSERACT_MAX_SIDE = 32767
#: Upscale only while the upscaled frame stays under this many pixels (cost grows with area):
#: frames up to about 1 megapixel; text on larger frames is read at its own size.
_MAX_UPSCALED_PIXELS = 2048 * 2048
TESSERACT = "tesseract"
#: One thread per OCR run: the service runs requests in parallel, and OpenMP threads contend.
_ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}


class OcrUnavailable(Exception):
    """The OCR engine is not installed or failed: a service fault, not the caller's."""


class FrameUnreadable(Exception):
    """This frame could not be checked (too large, or OCR ran out of time on it)."""


@dataclass(frozen=True)
class TextBox:
    """One word found in a frame: its box in frame pixels, its text and Tesseract's confidence."""

    x: int
    y: int
    width: int
    height: int
    text: str
    confidence: float


class TextDetector(Protocol):
    """Finds word boxes in an H x W uint8 grey frame (tests pass fakes)."""

    @property
    def max_frames(self) -> int:
        """Frames of one object it reads at most; the policy refuses objects with more."""
        ...

    def find_text(self, frame: NDArray[np.uint8]) -> list[TextBox]: ...


@dataclass(frozen=True)
class TesseractDetector:
    """Tesseract word boxes, united over ``passes``; ``timeout_s`` bounds each Tesseract run."""

    passes: tuple[str, ...] = PASSES
    scale: int = 2
    min_confidence: float = 0.0
    timeout_s: float = 20.0
    #: Frames of one object OCR'd at most; the policy refuses objects with more.
    max_frames: int = 64
    background_radius: int = 16

    def __post_init__(self) -> None:
        unknown = set(self.passes) - set(PASSES)
        if unknown or not self.passes:
            raise ValueError(f"OCR passes must be a non-empty subset of {PASSES}")
        if self.scale < 1:
            raise ValueError("OCR scale must be at least 1")

    @staticmethod
    def available() -> bool:
        """Whether the ``tesseract`` binary is installed (the readiness check)."""
        return shutil.which(TESSERACT) is not None

    def find_text(self, frame: NDArray[np.uint8], psm: int = 11) -> list[TextBox]:
        """Word boxes; ``psm`` is Tesseract's page segmentation (11 sparse text, 7 one line)."""
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise ValueError("expected an H x W uint8 frame")
        if max(frame.shape) > _TESSERACT_MAX_SIDE:
            raise FrameUnreadable("frame is larger than the OCR engine reads")
        image = Image.fromarray(frame)
        scale = self.scale if frame.size * self.scale**2 <= _MAX_UPSCALED_PIXELS else 1
        scale = scale if max(frame.shape) * scale <= _TESSERACT_MAX_SIDE else 1
        boxes: list[TextBox] = []
        for name in self.passes:
            seen = image if name == "plain" else self._background(image)
            boxes.extend(self._words(seen, scale, psm))
        return _distinct(boxes)

    def _background(self, image: Image.Image) -> Image.Image:
        smooth = image.filter(ImageFilter.MedianFilter(3))
        local = np.asarray(smooth.filter(ImageFilter.BoxBlur(self.background_radius)), dtype=np.float32)
        diff = np.abs(np.asarray(smooth, dtype=np.float32) - local)
        top = max(float(np.percentile(diff, 99.5)), 20.0)
        return Image.fromarray((255 - np.clip(diff * (255 / top), 0, 255)).astype(np.uint8))

    def _words(self, image: Image.Image, scale: int, psm: int) -> list[TextBox]:
        if scale != 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
        pgm = f"P5\n{image.width} {image.height}\n255\n".encode() + image.tobytes()
        try:
            proc = subprocess.run(
                [TESSERACT, "stdin", "stdout", "--psm", str(psm), "-l", "eng", "tsv"],
                input=pgm,
                capture_output=True,
                timeout=self.timeout_s,
                env=_ENV,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise FrameUnreadable("OCR ran out of time on a frame") from exc
        except OSError as exc:
            raise OcrUnavailable(f"OCR engine could not run ({type(exc).__name__})") from exc
        if proc.returncode != 0:
            raise FrameUnreadable(f"OCR failed on a frame (exit status {proc.returncode})")
        words = []
        rows = csv.DictReader(
            io.StringIO(proc.stdout.decode("utf-8", "replace")), delimiter="\t", quoting=csv.QUOTE_NONE
        )
        for row in rows:
            text = (row.get("text") or "").strip()
            if row.get("level") != "5" or not any(c.isalnum() for c in text):
                continue
            confidence = float(row["conf"])
            if confidence < self.min_confidence:
                continue
            x, y = int(row["left"]) // scale, int(row["top"]) // scale
            w, h = -(-int(row["width"]) // scale), -(-int(row["height"]) // scale)
            words.append(TextBox(x, y, w, h, text, confidence))
        return words


def _distinct(boxes: list[TextBox]) -> list[TextBox]:
    """One box per word read alike by several passes (the most confident one)."""
    kept: list[TextBox] = []
    for box in sorted(boxes, key=lambda b: -b.confidence):
        if not any(box.text.lower() == k.text.lower() and _iou(box, k) >= 0.5 for k in kept):
            kept.append(box)
    return kept


def _iou(a: TextBox, b: TextBox) -> float:
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union else 0.0
