"""Burned-in text policy: pass an object the recipe proves text-free, OCR every frame of the
others and black out what is found, or refuse.

Text burned into pixels (names and dates on ultrasound screens, secondary captures, labels in
photographs and radiographs) survives any attribute-level action. The recipe's ordered rules
decide per object; an ``ocr`` rule has every frame read by a :class:`~.ocr.TextDetector`, every
word box blacked out with a margin (unless its whole text matches a keep pattern, e.g. a
laterality marker), and ``BurnedInAnnotation`` set to ``NO`` only after that check: a frame
that cannot be checked refuses the whole object (4xx with a reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID
from sightline_common.errors import DependencyUnavailable, PayloadTooLarge, UnprocessableInput

from sightline_deid.core.decoding import INPUT_ERRORS, int_value, value
from sightline_deid.core.ocr import (
    FrameUnreadable,
    OcrUnavailable,
    TesseractDetector,
    TextBox,
    TextDetector,
)
from sightline_deid.core.recipe import BurnedInRule, OcrPolicy, Recipe
from sightline_deid.core.text_detect import DbnetDetector

#: What pixel decoders raise on data they cannot decode (pylibjpeg and friends use RuntimeError).
DECODER_ERRORS: tuple[type[Exception], ...] = (*INPUT_ERRORS, RuntimeError)
REASON = "burned-in-annotation"


@dataclass(frozen=True)
class Decision:
    """What the policy decided: ``label`` for the summary, ``ocr`` the rule to apply, if any."""

    label: str
    ocr: BurnedInRule | None = None
    #: The sender declared burned-in text (BurnedInAnnotation YES): OCR must find some.
    declared: bool = False


@dataclass(frozen=True)
class Cleaned:
    """What :func:`clean` did: frames read, word boxes blacked out and kept."""

    frames: int
    redacted: int
    kept: int

    def label(self, rule: str) -> str:
        return f"ocr:{rule}:frames={self.frames},redacted={self.redacted},kept={self.kept}"


def detector_for(
    policy: OcrPolicy, *, timeout_s: float = 20.0, max_frames: int = 64
) -> DbnetDetector | TesseractDetector:
    """The detector the recipe's OCR settings describe, with the service's limits."""
    tesseract = TesseractDetector(
        passes=policy.passes,
        scale=policy.scale,
        min_confidence=policy.min_confidence,
        timeout_s=timeout_s,
        max_frames=max_frames,
    )
    if policy.detector == "tesseract":
        return tesseract
    return DbnetDetector(policy.dbnet, tesseract, read_text=bool(policy.keep), max_frames=max_frames)


def _bia(ds: Dataset) -> str | None:
    raw = value(ds, "BurnedInAnnotation")
    return str(raw).strip().upper() if raw not in (None, "") else None


def decide(recipe: Recipe, ds: Dataset) -> Decision:
    """Apply the recipe's burned-in text rules to ``ds`` (the first that matches decides)."""
    policy = recipe.burned_in
    sop = str(value(ds, "SOPClassUID"))
    modality = str(value(ds, "Modality") or "")
    bia = _bia(ds)
    for rule in policy.rules:
        if rule.sop_classes and sop not in rule.sop_classes:
            continue
        if rule.modalities and modality not in rule.modalities:
            continue
        if rule.burned_in_annotation is not None and bia != rule.burned_in_annotation:
            continue
        if rule.action == "pass":
            if bia == "YES" and rule.burned_in_annotation != "YES":
                continue  # the sender's YES is never passed unread by a rule not written for it
            return Decision(f"passed:{rule.name}")
        if rule.action == "ocr":
            if "PixelData" not in ds:
                return Decision("not-applicable")
            return Decision(f"ocr:{rule.name}", rule, declared=bia == "YES")
        break
    if policy.default == "pass":
        return Decision("passed:default")
    raise UnprocessableInput(
        "the object may carry burned-in text and the recipe has no rule that checks it",
        reason=REASON,
        recipe=recipe.label,
    )


def clean(ds: Dataset, decision: Decision, policy: OcrPolicy, detector: TextDetector) -> Cleaned:
    """OCR every frame, black out the boxes found, set BurnedInAnnotation (raises 4xx/503)."""
    rule = decision.ocr
    if rule is None:
        raise ValueError("clean() needs an 'ocr' decision")  # a caller's bug
    frames = int_value(ds, "NumberOfFrames", default=1)
    if frames > detector.max_frames:
        raise PayloadTooLarge(
            f"object has more frames than the {detector.max_frames} the burned-in text check reads",
            reason="burned-in-frame-limit",
        )
    arr = _pixels(ds)
    view = arr if frames > 1 else arr[np.newaxis, ...]
    mono1 = str(value(ds, "PhotometricInterpretation") or "").strip() == "MONOCHROME1"
    changed = bool(rule.regions)
    for region in rule.regions:
        y1 = None if region.height is None else region.y + region.height
        x1 = None if region.width is None else region.x + region.width
        for index in range(view.shape[0]):
            view[index, region.y : y1, region.x : x1, ...] = _black(view[index], mono1)
    redacted = kept = 0
    for index in range(view.shape[0]):
        try:
            boxes = detector.find_text(_grey(view[index], ds))
        except FrameUnreadable as exc:
            raise UnprocessableInput(
                f"frame {index + 1} could not be checked for burned-in text ({exc})",
                reason="burned-in-unchecked",
            ) from None
        except OcrUnavailable as exc:
            raise DependencyUnavailable(
                f"burned-in text check unavailable ({exc})", reason="ocr-unavailable"
            ) from None
        found = []
        for box in boxes:
            if is_kept(box.text, policy.keep):
                kept += 1
            else:
                found.append(box)
        for x0, y0, x1, y1 in black_out_rects(found, policy.margin):
            view[index, y0:y1, x0:x1, ...] = _black(view[index], mono1)
        redacted += len(found)
    if decision.declared and redacted + kept == 0 and not rule.regions:
        raise UnprocessableInput(
            "BurnedInAnnotation is YES but no text was located in the pixels", reason=REASON
        )
    if changed or redacted:
        _store(ds, arr)
    ds.BurnedInAnnotation = "NO"
    return Cleaned(view.shape[0], redacted, kept)


def is_kept(text: str, keep: tuple[re.Pattern[str], ...]) -> bool:
    """Whether a word's whole text (without end punctuation) matches a keep pattern."""
    return any(p.fullmatch(_core(text)) for p in keep)


def _core(text: str) -> str:
    """A word without the punctuation OCR attaches to its ends ("R." reads as "R")."""
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def _pixels(ds: Dataset) -> NDArray[np.generic]:
    """The decoded pixels, writable; compressed data is decompressed in ``ds`` first."""
    if int_value(ds, "BitsAllocated") % 8 and int_value(ds, "BitsAllocated") != 1:
        raise UnprocessableInput(
            "pixel data of this bit depth cannot be checked", reason="burned-in-unchecked"
        )
    try:
        if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            # A fresh random SOP Instance UID here would make the pseudonym differ on every run.
            ds.decompress(generate_instance_uid=False)
        return np.array(ds.pixel_array, copy=True)
    except DECODER_ERRORS as exc:
        raise UnprocessableInput(
            f"pixel data could not be decoded ({type(exc).__name__})",
            reason="malformed",
            attribute="PixelData",
        ) from None


def _grey(frame: NDArray[np.generic], ds: Dataset) -> NDArray[np.uint8]:
    """One frame as 8-bit grey for OCR: palette and colour to luma, the stored range stretched."""
    photometric = str(value(ds, "PhotometricInterpretation") or "").strip()
    data = frame
    if photometric == "PALETTE COLOR":
        try:
            data = apply_color_lut(frame, ds)
        except DECODER_ERRORS as exc:
            raise UnprocessableInput(
                f"palette could not be applied ({type(exc).__name__})", reason="burned-in-unchecked"
            ) from None
    values = data.astype(np.float32)
    if values.ndim == 3:
        values = values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    grey: NDArray[np.uint8] = ((values - low) * (255.0 / (high - low))).round().astype(np.uint8)
    return grey


def _black(frame: NDArray[np.generic], mono1: bool) -> object:
    """A constant fill that hides text: 0 for colour, else the frame's darkest stored value
    (its minimum; its maximum for MONOCHROME1; for a palette, the lowest index)."""
    if frame.ndim == 3:
        return 0
    return frame.max() if mono1 else frame.min()


def black_out_rects(boxes: list[TextBox], margin: float) -> list[tuple[int, int, int, int]]:
    """The rectangles to black out: each word box grown by the margin, and words of one line
    joined across the gap between them (OCR boxes can fall short of a glyph's edge)."""
    rects = []
    for box in boxes:
        pad = max(2, round(box.height * margin))
        rects.append(
            [max(0, box.x - pad), max(0, box.y - pad), box.x + box.width + pad, box.y + box.height + pad]
        )
    merged = True
    while merged:
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                height = min(a[3] - a[1], b[3] - b[1])
                overlap = min(a[3], b[3]) - max(a[1], b[1])
                gap = max(a[0], b[0]) - min(a[2], b[2])
                if overlap >= height / 2 and gap <= height:
                    rects[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return [(r[0], r[1], r[2], r[3]) for r in rects]


def _store(ds: Dataset, arr: NDArray[np.generic]) -> None:
    """Write the cleaned pixels back, native and interleaved (colour as RGB)."""
    bits = int_value(ds, "BitsAllocated")
    if bits == 1:
        ds.PixelData = pack_bits(arr)
    else:
        ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    if int_value(ds, "SamplesPerPixel") == 3:
        # pydicom hands colour out as interleaved RGB whatever the stored encoding was.
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
