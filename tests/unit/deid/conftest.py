"""Shared fixtures of the de-identification unit tests."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from numpy.typing import NDArray
from sightline_deid.core import burned_in
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.ocr import TesseractDetector, TextBox
from sightline_deid.core.recipe import Recipe, load_recipe

from tests.conftest import skip_or_fail_in_ci

SECRET = b"unit-test-secret-unit-test-secret-0123"


@pytest.fixture(scope="session")
def recipe() -> Recipe:
    return load_recipe("sightline-basic")


class CachedDetector:
    """The recipe's Tesseract detector, remembering each frame's boxes: several tests de-identify
    the same real files, and OCR is by far the slowest step (the answers are the same)."""

    def __init__(self, detector: TesseractDetector) -> None:
        self.detector = detector
        self.max_frames = detector.max_frames
        self._boxes: dict[bytes, list[TextBox]] = {}

    def find_text(self, frame: NDArray[np.uint8]) -> list[TextBox]:
        key = hashlib.sha256(np.ascontiguousarray(frame).tobytes() + str(frame.shape).encode()).digest()
        if key not in self._boxes:
            self._boxes[key] = self.detector.find_text(frame)
        return list(self._boxes[key])


@pytest.fixture(scope="session")
def engine(recipe: Recipe) -> Deidentifier:
    # The recipe OCRs every object with pixels it does not prove text-free (CR, XC, US canaries).
    if not TesseractDetector.available():
        skip_or_fail_in_ci("tesseract is not installed (make tools: scripts/get-tesseract.sh)")
    return Deidentifier(recipe, SECRET, detector=CachedDetector(burned_in.detector_for(recipe.burned_in.ocr)))
