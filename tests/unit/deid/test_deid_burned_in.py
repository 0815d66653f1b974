"""Burned-in text: OCR over every frame of what the recipe does not prove text-free, words blacked
out, BurnedInAnnotation set from what was done, refusal when a frame cannot be checked.

The text is drawn by these tests (DejaVu fonts from ``make tools``); OCR is Debian's tesseract.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pack_bits
from pydicom.uid import SecondaryCaptureImageStorage, UltrasoundMultiFrameImageStorage
from sightline_common.errors import DependencyUnavailable, PayloadTooLarge, UnprocessableInput
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.ocr import FrameUnreadable, OcrUnavailable, TextBox
from sightline_deid.core.recipe import Recipe, RecipeError, parse_recipe

from tests.conftest import skip_or_fail_in_ci
from tests.unit.deid.conftest import SECRET
from tests.unit.deid.deid_canary import SOP_CLASSES, canary_dataset, to_bytes

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
ROWS, COLS = 240, 320


def _font(size: int) -> ImageFont.FreeTypeFont:
    if not FONT.is_file():
        skip_or_fail_in_ci("DejaVu fonts are not installed (make tools: scripts/get-tesseract.sh)")
    return ImageFont.truetype(str(FONT), size)


def _image(texts: list[tuple[int, int, str]], *, background: int = 30, size: int = 18) -> NDArray[np.uint8]:
    """A grey frame with a soft gradient and ``texts`` drawn in white at (x, y)."""
    ramp = np.linspace(background, background + 40, COLS, dtype=np.float32)
    img = Image.fromarray(np.tile(ramp, (ROWS, 1)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for x, y, text in texts:
        draw.text((x, y), text, fill=235, font=_font(size))
    return np.asarray(img)


def _with_pixels(ds: Dataset, frames: list[NDArray[np.uint8]], rgb: bool = False) -> Dataset:
    ds.Rows, ds.Columns = ROWS, COLS
    if rgb:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        data = [np.repeat(f[..., np.newaxis], 3, axis=2) for f in frames]
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        data = frames
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = np.stack(data).tobytes()
    return ds


def _text_left(pixels: NDArray[np.generic], rows: slice, cols: slice) -> bool:
    """Whether any bright (text) pixel survives in the window."""
    return bool((np.asarray(pixels)[rows, cols] > 150).any())


def _out(engine: Deidentifier, ds: Dataset) -> tuple[pydicom.Dataset, str]:
    result = engine.deidentify(to_bytes(ds), "tenant-a")
    return pydicom.dcmread(BytesIO(result.data)), result.summary.burned_in


def test_recipe_rule_ultrasound_text_in_the_bottom_rows_is_blacked_out(engine: Deidentifier) -> None:
    # Finding 2: the top-64-row band left this text intact and still marked the image NO.
    ds = _with_pixels(canary_dataset("US", 1), [_image([(20, 205, "DOE JOHN 1977")])])
    out, label = _out(engine, ds)
    assert not _text_left(out.pixel_array, slice(190, ROWS), slice(0, COLS))
    assert (out.pixel_array[:64] == out.pixel_array.min()).all()  # the banner is still blanked
    assert out.BurnedInAnnotation == "NO"
    assert label.startswith("ocr:ultrasound:") and "redacted=0" not in label
    assert "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


@pytest.mark.parametrize("flag", ["NO", None])
def test_recipe_rule_pixels_checked_photograph_with_text_is_blacked_out(
    engine: Deidentifier, flag: str | None
) -> None:
    # Finding 2: a photograph passed on the sender's NO (or had no pixel check at all).
    ds = _with_pixels(canary_dataset("XC", 1), [_image([(30, 110, "SMITH 12/03/2021")])], rgb=True)
    if flag is None:
        del ds.BurnedInAnnotation
    out, label = _out(engine, ds)
    assert not _text_left(out.pixel_array, slice(95, 140), slice(0, COLS))
    assert out.BurnedInAnnotation == "NO" and out.PhotometricInterpretation == "RGB"
    assert label.startswith("ocr:pixels-checked:")


def test_photograph_without_text_is_checked_and_left_unchanged(engine: Deidentifier) -> None:
    ds = canary_dataset("XC", 1)
    del ds.BurnedInAnnotation
    original = ds.PixelData
    out, label = _out(engine, ds)
    assert label == "ocr:pixels-checked:frames=1,redacted=0,kept=0"
    assert out.BurnedInAnnotation == "NO" and out.PixelData == original


def test_recipe_ocr_keep_pattern_leaves_a_laterality_marker(engine: Deidentifier) -> None:
    frame = _image([(240, 20, "LEFT"), (20, 200, "DOE JOHN")], size=20)
    ds = _with_pixels(canary_dataset("CR", 1), [frame])
    out, label = _out(engine, ds)
    assert _text_left(out.pixel_array, slice(10, 50), slice(230, COLS))  # the marker stays
    assert not _text_left(out.pixel_array, slice(190, ROWS), slice(0, 200))
    assert "kept=1" in label and out.BurnedInAnnotation == "NO"


def test_every_frame_of_a_multi_frame_object_is_checked(engine: Deidentifier) -> None:
    ds = canary_dataset("US", 1)
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    blank, text = _image([]), _image([(40, 150, "PATIENT 4471")])
    ds = _with_pixels(ds, [blank, text, blank])
    out, label = _out(engine, ds)
    assert "frames=3" in label
    assert not _text_left(out.pixel_array[1], slice(135, 185), slice(0, COLS))


def test_secondary_capture_is_checked_not_refused(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.SOPClassUID, ds.Modality = SecondaryCaptureImageStorage, "OT"
    out, label = _out(engine, _with_pixels(ds, [_image([(50, 60, "ACC 99120")])]))
    assert label.startswith("ocr:pixels-checked:") and out.BurnedInAnnotation == "NO"
    assert not _text_left(out.pixel_array, slice(45, 95), slice(0, COLS))


def test_recipe_rule_cross_sectional_text_free_skips_ocr_and_leaves_the_flag(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    assert ds.SOPClassUID == SOP_CLASSES["CT"] and "BurnedInAnnotation" not in ds
    out, label = _out(engine, ds)
    assert label == "passed:cross-sectional-text-free"
    assert "BurnedInAnnotation" not in out  # nothing was checked, so nothing is claimed
    assert "113101" not in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}


def test_recipe_rule_declared_burned_in_without_text_found_is_refused(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(UnprocessableInput) as info:
        engine.deidentify(to_bytes(ds), "tenant-a")
    assert info.value.extra["reason"] == "burned-in-annotation"


def test_recipe_rule_declared_burned_in_with_text_is_cleaned(engine: Deidentifier) -> None:
    ds = _with_pixels(canary_dataset("CT", 1), [_image([(30, 30, "JANE ROE")])])
    ds.BurnedInAnnotation = "YES"
    out, label = _out(engine, ds)
    assert label.startswith("ocr:declared-burned-in:") and out.BurnedInAnnotation == "NO"
    assert not _text_left(out.pixel_array, slice(20, 70), slice(0, COLS))


@dataclass
class FakeDetector:
    """Boxes or errors on demand, and a count of the frames it was shown."""

    max_frames: int = 64
    error: Exception | None = None
    boxes: list[TextBox] = field(default_factory=list)
    seen: int = 0

    def find_text(self, frame: NDArray[np.uint8]) -> list[TextBox]:
        self.seen += 1
        if self.error is not None:
            raise self.error
        return list(self.boxes)


def test_a_frame_that_cannot_be_checked_refuses_the_object(recipe: Recipe) -> None:
    engine = Deidentifier(recipe, SECRET, detector=FakeDetector(error=FrameUnreadable("timeout")))
    with pytest.raises(UnprocessableInput) as info:
        engine.deidentify(to_bytes(canary_dataset("XC", 1)), "tenant-a")
    assert info.value.status == 422 and info.value.extra["reason"] == "burned-in-unchecked"


def test_more_frames_than_the_ocr_limit_is_refused_413_before_any_ocr(recipe: Recipe) -> None:
    fake = FakeDetector(max_frames=2)
    engine = Deidentifier(recipe, SECRET, detector=fake)
    ds = canary_dataset("US", 1)
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds = _with_pixels(ds, [np.zeros((ROWS, COLS), np.uint8)] * 3)
    with pytest.raises(PayloadTooLarge) as info:
        engine.deidentify(to_bytes(ds), "tenant-a")
    assert info.value.extra["reason"] == "burned-in-frame-limit" and fake.seen == 0


def test_ocr_engine_missing_is_503_not_a_pass(recipe: Recipe) -> None:
    engine = Deidentifier(recipe, SECRET, detector=FakeDetector(error=OcrUnavailable("not found")))
    with pytest.raises(DependencyUnavailable):
        engine.deidentify(to_bytes(canary_dataset("XC", 1)), "tenant-a")


def test_boxes_are_blacked_out_with_a_margin_and_monochrome1_black_is_its_maximum(recipe: Recipe) -> None:
    fake = FakeDetector(boxes=[TextBox(100, 100, 40, 12, "CNRY", 95.0)])
    engine = Deidentifier(recipe, SECRET, detector=fake)
    ds = canary_dataset("CR", 1)
    ds = _with_pixels(ds, [np.full((ROWS, COLS), 100, np.uint8)])
    ds.PixelData = (np.arange(ROWS * COLS) % 200 + 20).astype(np.uint8).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = pydicom.dcmread(BytesIO(engine.deidentify(to_bytes(ds), "tenant-a").data))
    pixels = out.pixel_array
    assert (pixels[97:115, 97:143] == 219).all()  # 3 px margin (a quarter of 12) on every side
    assert pixels[96, 96] != 219 or pixels[116, 144] != 219


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{name: band, action: blank, regions: [{x: 0, y: 0, width: full, height: 64}]}", "unknown action"),
        ("{name: trust-me, action: pass}", "needs a reason"),
    ],
)
def test_recipe_refuses_dishonest_burned_in_rules(rule: str, message: str) -> None:
    from importlib import resources

    text = resources.files("sightline_deid.resources.recipes").joinpath("sightline-basic.yaml").read_text()
    first = "    - name: encapsulated-documents"
    text = text.replace(f"  rules:\n{first}", f"  rules:\n    - {rule}\n{first}")
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text)


def test_single_bit_pixels_are_blacked_out_and_packed_again(recipe: Recipe) -> None:
    engine = Deidentifier(recipe, SECRET, detector=FakeDetector(boxes=[TextBox(4, 4, 4, 4, "X", 99.0)]))
    ds = canary_dataset("CT", 1)
    ds.SOPClassUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.7.1", "OT"  # Multi-frame Single Bit SC
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 1, 1, 0
    bits = np.ones((16, 16), np.uint8)
    bits[12:] = 0
    ds.PixelData = pack_bits(bits)
    pixels = pydicom.dcmread(BytesIO(engine.deidentify(to_bytes(ds), "tenant-a").data)).pixel_array
    assert (pixels[2:10, 2:10] == 0).all() and (pixels[:2] == 1).all() and (pixels[12:] == 0).all()


def test_recipe_rule_encapsulated_documents_refused_even_when_declared(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.SOPClassUID, ds.Modality, ds.BurnedInAnnotation = "1.2.840.10008.5.1.4.1.1.104.1", "DOC", "YES"
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelRepresentation",
    ):
        delattr(ds, keyword)
    with pytest.raises(UnprocessableInput) as info:
        engine.deidentify(to_bytes(ds), "tenant-a")
    assert info.value.extra["reason"] == "burned-in-annotation"


def test_a_pass_rule_never_passes_a_declared_yes(recipe: Recipe) -> None:
    fake = FakeDetector(boxes=[TextBox(10, 10, 30, 10, "CNRY", 95.0)])
    rules = (recipe.burned_in.rules[3], *recipe.burned_in.rules)  # cross-sectional pass first
    assert rules[0].action == "pass"
    reordered = replace(recipe, burned_in=replace(recipe.burned_in, rules=rules))
    ds = canary_dataset("CT", 1)
    ds.BurnedInAnnotation = "YES"
    result = Deidentifier(reordered, SECRET, detector=fake).deidentify(to_bytes(ds), "tenant-a")
    assert result.summary.burned_in.startswith("ocr:declared-burned-in:") and fake.seen == 1


@pytest.mark.parametrize(
    ("characters", "message"),
    [
        ("{contrast: 20, colour: 3}", "unknown settings"),
        ("{uniformity: 1.5}", "uniformity"),
        ("[20, 0.6]", "mapping"),
    ],
)
def test_recipe_refuses_bad_lone_character_settings(characters: str, message: str) -> None:
    from importlib import resources

    text = resources.files("sightline_deid.resources.recipes").joinpath("sightline-basic.yaml").read_text()
    start = text.index("      characters:\n")
    end = text.index("min_probability: 0.98\n", start) + len("min_probability: 0.98\n")
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text[:start] + f"      characters: {characters}\n" + text[end:])
