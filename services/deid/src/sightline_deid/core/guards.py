"""Input guards: what a file must be before any action runs (size, Part 10 form, attributes, pixels).

Each check refuses with a typed 4xx naming a limit or an attribute keyword, never a value.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from sightline_common.errors import InvalidInput, PayloadTooLarge, UnprocessableInput

from sightline_deid.core.decoding import INPUT_ERRORS, int_value, value

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
REQUIRED_FOR_PIXELS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the service parse, decode or allocate."""

    max_bytes: int = 64 * 1024 * 1024
    #: A deflated data set is inflated up to this size and refused (413) beyond it.
    max_inflated_bytes: int = 256 * 1024 * 1024
    max_decoded_pixel_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 2000.0
    max_sequence_depth: int = 16
    max_elements: int = 200_000


def check_size(data: bytes, limits: Limits) -> None:
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"file exceeds the {limits.max_bytes} byte limit", reason="oversized")


def parse(data: bytes, limits: Limits) -> Dataset:
    """Split a DICOM Part 10 file into raw elements (values are decoded later, on demand)."""
    fp = BytesIO(data)
    try:
        read_preamble(fp, force=False)
        meta = _read_file_meta_info(fp)
    except INPUT_ERRORS:
        raise InvalidInput("not a DICOM Part 10 file (no preamble, DICM prefix or file meta)",
                           reason="not-dicom") from None
    ts = meta.get("TransferSyntaxUID")
    if not ts:
        raise InvalidInput("file meta lacks TransferSyntaxUID", reason="missing-attribute")
    if not UID(ts).is_transfer_syntax:
        raise UnprocessableInput("unknown transfer syntax", reason="unsupported")
    syntax = UID(ts)
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    try:
        body = fp
        if syntax == DeflatedExplicitVRLittleEndian:
            body = BytesIO(inflate(data[fp.tell():], limits.max_inflated_bytes))
        # The rest as pydicom.dcmread reads it, without reading the preamble and meta again.
        dataset = read_dataset(body, implicit, little)
        ds = FileDataset("", dataset, data[:128], meta, implicit, little)
        ds.set_original_encoding(implicit, little, dataset._character_set)
        return ds
    except INPUT_ERRORS as exc:
        raise InvalidInput(f"DICOM data set could not be parsed ({type(exc).__name__}): truncated "
                           "or malformed", reason="malformed") from None


def inflate(data: bytes, limit: int) -> bytes:
    """A deflated data set (PS3.5 A.5), inflated to at most ``limit`` bytes.

    pydicom inflates in one call with no bound (a zip bomb); this stops at the limit.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body = inflater.decompress(data, limit + 1)
    if len(body) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"deflated data set inflates beyond the {limit} byte limit",
                              reason="inflated-too-large")
    body += inflater.flush()
    if len(body) > limit:
        raise PayloadTooLarge(f"deflated data set inflates beyond the {limit} byte limit",
                              reason="inflated-too-large")
    if not inflater.eof:
        raise zlib.error("deflated data set is truncated")
    return body


def check_required(ds: Dataset) -> None:
    names = REQUIRED + (REQUIRED_FOR_PIXELS if "PixelData" in ds else ())
    for keyword in names:
        if value(ds, keyword) in (None, "", b""):
            raise UnprocessableInput(f"required attribute {keyword} is missing or empty",
                                     reason="missing-attribute", attribute=keyword)


def check_pixels(ds: Dataset, limits: Limits) -> None:
    """Refuse pixel data that is inconsistent with its description or would decode too large."""
    if "PixelData" not in ds:
        return
    rows, cols = int_value(ds, "Rows"), int_value(ds, "Columns")
    samples, bits = int_value(ds, "SamplesPerPixel"), int_value(ds, "BitsAllocated")
    frames = int_value(ds, "NumberOfFrames", default=1)
    if min(rows, cols, samples, bits, frames) <= 0 or (bits % 8 != 0 and bits != 1):
        raise UnprocessableInput("image pixel description is invalid", reason="invalid-pixels")
    expected = (rows * cols * samples * frames * bits + 7) // 8
    if expected > limits.max_decoded_pixel_bytes:
        raise PayloadTooLarge(
            f"decoded pixel data would exceed {limits.max_decoded_pixel_bytes} bytes",
            reason="pixel-bomb")
    ts = UID(ds.file_meta.TransferSyntaxUID)
    stored = len(ds.get_item(0x7FE00010).value or b"")
    if not ts.is_compressed:
        if samples == 3 and str(value(ds, "PhotometricInterpretation")).strip() == "YBR_FULL_422":
            # Native YBR_FULL_422 stores two chroma samples per two pixels (PS3.3 C.7.6.3.1.2):
            # two thirds of the decoded size.
            expected = expected * 2 // 3
        if stored < expected:
            raise InvalidInput("pixel data is shorter than its description (truncated)",
                               reason="truncated")
    elif stored == 0 or expected / max(stored, 1) > limits.max_compression_ratio:
        raise UnprocessableInput(
            f"compressed pixel data expands more than {limits.max_compression_ratio:g}x",
            reason="pixel-bomb")
