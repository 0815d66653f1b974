"""From DICOM pixels to the model's input tensor, as the model's manifest declares.

This is the one implementation used by the preprocess service, the explanation service,
training and evaluation, so that the model sees the same pixels everywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, fields

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import ExplicitVRLittleEndian

from sightline_common.errors import InvalidInput, UnprocessableInput
from sightline_common.manifest import PreprocessSpec

MAX_PIXELS = 64 * 1024 * 1024  # rows*cols*samples of the decoded frame, checked before decoding
MAX_FRAMES = 10_000  # more frames than any real instance declares: a corrupt header
FRAME_POLICIES = ("first", "refuse")
FRAME_POLICY = "first"
"""Multi-frame policy. ``first``: decode and use only frame 0 (a model that reads one image per
instance sees the first image of a multi-frame instance; the other frames are never decoded).
``refuse``: reject any instance with more than one frame (InvalidInput)."""

_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"})
_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
_PALETTE = "PALETTE COLOR"


def read_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes or raise :class:`InvalidInput` with a reason (never a value).

    Deflated transfer syntax is inflated here by pydicom; pixel data stays encoded until
    :func:`to_rgb_uint8` decodes the one frame it needs.
    """
    if not data:
        raise InvalidInput("empty body: expected a DICOM Part 10 file")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as exc:
        raise InvalidInput("not a DICOM Part 10 file (missing DICM preamble)") from exc
    except Exception as exc:
        raise InvalidInput(f"unreadable DICOM ({type(exc).__name__})") from exc
    if len(ds) == 0:
        raise InvalidInput("the DICOM file holds no data elements")
    return ds


def check_accepted(ds: Dataset, spec: PreprocessSpec) -> None:
    """Refuse a study whose modality or SOP class the model does not accept (422)."""
    modality = str(ds.get("Modality", ""))
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality not in spec.accepted_modalities:
        raise UnprocessableInput(
            f"modality {modality or '(none)'} is not accepted by this model",
            accepted_modalities=spec.accepted_modalities,
        )
    if sop_class not in spec.accepted_sop_classes:
        raise UnprocessableInput(
            "SOP class is not accepted by this model", accepted_sop_classes=spec.accepted_sop_classes
        )


def _int_attr(ds: Dataset, keyword: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            if default is None:
                raise InvalidInput(f"missing required attribute {keyword}")
            return default
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"attribute {keyword} is not an integer") from exc


def _pixels(ds: Dataset, frame_policy: str = FRAME_POLICY) -> tuple[NDArray[np.generic], str]:
    """Decode the one frame the policy selects; return it and its photometric interpretation.

    Every limit is checked from the header before any pixel is decoded.
    """
    if frame_policy not in FRAME_POLICIES:
        raise ValueError(f"unknown frame policy {frame_policy!r}")
    if "PixelData" not in ds:
        raise InvalidInput("the instance has no (integer) pixel data")
    rows, cols = _int_attr(ds, "Rows"), _int_attr(ds, "Columns")
    frames = _int_attr(ds, "NumberOfFrames", 1)
    samples = _int_attr(ds, "SamplesPerPixel", 1)
    bits = _int_attr(ds, "BitsAllocated")
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise InvalidInput("zero-size image (Rows, Columns or NumberOfFrames is 0)")
    if samples not in (1, 3):
        raise InvalidInput("SamplesPerPixel must be 1 or 3")
    if bits not in (1, 8, 16, 32):
        raise UnprocessableInput("BitsAllocated must be 1, 8, 16 or 32")
    if rows * cols * samples > MAX_PIXELS or frames > MAX_FRAMES:
        raise InvalidInput("image dimensions exceed the configured limit")
    if frames > 1 and frame_policy == "refuse":
        raise InvalidInput("multi-frame instances are refused by the frame policy")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in _COLOUR | _GREY | {_PALETTE}:
        raise UnprocessableInput("unsupported photometric interpretation")
    if (samples == 3) != (photometric in _COLOUR):
        raise InvalidInput("SamplesPerPixel does not match the photometric interpretation")
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        raise InvalidInput("missing transfer syntax")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise UnprocessableInput("transfer syntax is not supported for pixel decoding") from exc
    if not decoder.is_available:
        raise UnprocessableInput("no decoder for this transfer syntax is installed")
    try:
        # as_rgb: YBR_FULL, YBR_FULL_422 (and JPEG 2000's ICT/RCT) come out as RGB.
        # pydicom annotates **kwargs as DecodeOptions (the TypedDict) rather than Unpack[...].
        arr, meta = decoder.as_array(ds, index=0, as_rgb=True)  # type: ignore[arg-type]
    except Exception as exc:
        raise InvalidInput(f"pixel data could not be decoded ({type(exc).__name__})") from exc
    if arr.size == 0:
        raise InvalidInput("the decoded frame is empty")
    return arr, str(meta.get("photometric_interpretation", photometric)).upper()


def _first(value: object) -> float:
    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)  # type: ignore[arg-type]


def _voi_unit(values: NDArray[np.float64], ds: Dataset) -> NDArray[np.float64] | None:
    """The VOI transform (LUT sequence, else window) to [0, 1]; ``None`` when the header has none."""
    from pydicom.pixels.processing import apply_voi_lut

    seq = ds.get("VOILUTSequence")
    if seq:
        try:
            entries, first = int(seq[0].LUTDescriptor[0]) or 65536, int(seq[0].LUTDescriptor[1])
            # The LUT's output range, read through pydicom (LUTData may be US values or OW bytes).
            table = apply_voi_lut(np.arange(first, first + entries), ds, index=0, prefer_lut=True)
            # The LUT is indexed by integers (the modality LUT's output); pydicom warns on floats.
            out = apply_voi_lut(np.round(values).astype(np.int64), ds, index=0, prefer_lut=True)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise InvalidInput(f"the VOI LUT is unusable ({type(exc).__name__})") from exc
        lo, hi = float(table.min()), float(table.max())
        out = out.astype(np.float64)
        return np.zeros_like(out) if hi <= lo else np.clip((out - lo) / (hi - lo), 0.0, 1.0)
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if width <= 0:
        return None  # not a valid window: fall back to the image's own range
    if function == "SIGMOID":
        sigmoid: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
        return sigmoid
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width <= 1:
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


_PALETTE_DATA = tuple(
    f"{prefix}{colour}PaletteColorLookupTableData"
    for prefix in ("", "Segmented")
    for colour in ("Red", "Green", "Blue")
)


def _palette_little_endian(ds: Dataset) -> Dataset:
    """pydicom 3.0 reads OW palette data of a big-endian file as little-endian: swap it first."""
    encoding = getattr(ds, "original_encoding", (None, True))
    if encoding[1] is not False:
        return ds
    fixed = Dataset()
    fixed.update(ds)
    fixed.file_meta = FileMetaDataset()
    fixed.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in _PALETTE_DATA:
        raw = ds.get(keyword)
        if isinstance(raw, bytes) and len(raw) % 2 == 0:
            setattr(fixed, keyword, np.frombuffer(raw, ">u2").astype("<u2").tobytes())
    return fixed


def _to_uint8(arr: NDArray[np.generic], bits: int) -> NDArray[np.uint8]:
    if arr.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(arr)
    scale = 255.0 / max(1, 2**bits - 1)
    out: NDArray[np.uint8] = np.clip(np.round(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return out


def to_rgb_uint8(ds: Dataset, frame_policy: str = FRAME_POLICY) -> NDArray[np.uint8]:
    """Decoded pixels as an H x W x 3 uint8 image (grey images are replicated into 3 channels).

    Colour: YBR_* converted to RGB, more than 8 bits scaled from BitsStored. Palette colour:
    through its lookup tables. Grey: modality LUT (rescale slope/intercept or LUT), then the
    VOI LUT or the first window (LINEAR, LINEAR_EXACT, SIGMOID) to the full 8-bit range, or,
    without either, the image's own min..max; MONOCHROME1 inverted. 1-bit images map 1 to 255.
    """
    from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space

    arr, photometric = _pixels(ds, frame_policy)
    bits_stored = _int_attr(ds, "BitsStored", _int_attr(ds, "BitsAllocated"))
    if photometric in _COLOUR:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise InvalidInput("colour pixel data has an unexpected layout")
        if photometric.startswith("YBR_FULL"):
            arr = convert_color_space(arr, photometric, "RGB")
        return _to_uint8(arr, bits_stored)
    if arr.ndim != 2:
        raise InvalidInput(f"unsupported pixel layout with {arr.ndim} dimensions")
    if photometric == _PALETTE:
        try:
            rgb = apply_color_lut(arr, _palette_little_endian(ds))
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:
            raise InvalidInput(f"palette colour lookup tables are unusable ({type(exc).__name__})") from exc
        return _to_uint8(rgb, 8 if rgb.dtype == np.uint8 else lut_bits)
    if int(ds.get("BitsAllocated", 0)) == 1:
        grey = np.greater(arr, 0).astype(np.uint8) * 255
    else:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        scaled = _voi_unit(values, ds)
        if scaled is None:
            lo, hi = float(values.min()), float(values.max())
            scaled = np.zeros_like(values) if hi <= lo else (values - lo) / (hi - lo)
        if photometric == "MONOCHROME1":
            scaled = 1.0 - scaled
        grey = np.round(scaled * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def resize(rgb: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.uint8]:
    """Resize to the model's input size (shorter side then centre crop, or stretch)."""
    image = Image.fromarray(rgb)
    if spec.resize == "stretch":
        return np.asarray(image.resize((spec.width, spec.height), Image.Resampling.BILINEAR))
    h, w = rgb.shape[:2]
    scale = max(spec.height / h, spec.width / w)
    new_w, new_h = max(spec.width, round(w * scale)), max(spec.height, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - spec.width) // 2, (new_h - spec.height) // 2
    return np.asarray(image.crop((left, top, left + spec.width, top + spec.height)))


#: ITU-R BT.601 luma: a grey image replicated into three channels maps back to its own values.
LUMA = (0.299, 0.587, 0.114)


def channels(spec: PreprocessSpec) -> int:
    """The number of input channels the model's spec asks for (3 for RGB, 1 for MONOCHROME)."""
    return 3 if spec.colour == "RGB" else 1


def normalise(rgb: NDArray[np.uint8], spec: PreprocessSpec) -> NDArray[np.float32]:
    """H x W x 3 uint8 to a C x H x W float32 tensor with the manifest's mean and std.

    RGB models get the three channels; MONOCHROME models one channel, the luma of the image
    (for a grey DICOM image, which :func:`to_rgb_uint8` replicates, exactly its grey values).
    """
    x = rgb.astype(np.float32) / 255.0
    if spec.colour == "MONOCHROME":
        x = (x @ np.asarray(LUMA, np.float32))[:, :, None]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass(frozen=True)
class ImageStats:
    """Image statistics for drift monitoring (no pixels, nothing identifying)."""

    brightness: float
    contrast: float
    red: float
    green: float
    blue: float
    sharpness: float
    height: int
    width: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


#: Every statistic of :class:`ImageStats`, in order (the columns of preprocess's ``image_stats``).
IMAGE_STAT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(ImageStats))
#: The statistics compared against the training reference for drift (the image size is not).
DRIFT_STAT_NAMES: tuple[str, ...] = tuple(n for n in IMAGE_STAT_NAMES if n not in ("height", "width"))


def image_stats(rgb: NDArray[np.uint8]) -> ImageStats:
    """Brightness, contrast, mean colour, sharpness (variance of a Laplacian) and size."""
    f = rgb.astype(np.float32) / 255.0
    grey = f @ np.asarray([0.299, 0.587, 0.114], np.float32)
    lap = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    means = f.reshape(-1, 3).mean(axis=0)
    return ImageStats(
        brightness=float(grey.mean()),
        contrast=float(grey.std()),
        red=float(means[0]),
        green=float(means[1]),
        blue=float(means[2]),
        sharpness=float(lap.var()) if lap.size else 0.0,
        height=int(rgb.shape[0]),
        width=int(rgb.shape[1]),
    )


def prepare(ds: Dataset, spec: PreprocessSpec) -> tuple[NDArray[np.float32], NDArray[np.uint8], ImageStats]:
    """Check, decode, resize and normalise: the model input, the resized image and its stats."""
    check_accepted(ds, spec)
    rgb = to_rgb_uint8(ds)
    stats = image_stats(rgb)
    resized = resize(rgb, spec)
    return normalise(resized, spec), resized, stats
