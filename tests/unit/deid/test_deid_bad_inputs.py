"""Bad input gives a typed 4xx error with a reason, never a crash, a hang or a 5xx."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless
from sightline_common.errors import SightlineError
from sightline_deid.core.engine import Deidentifier, Limits
from sightline_deid.core.recipe import Recipe

from tests.unit.deid.deid_canary import canary_dataset, survivors, to_bytes


def _refused(engine: Deidentifier, data: bytes) -> SightlineError:
    with pytest.raises(SightlineError) as info:
        engine.deidentify(data, "tenant-a")
    err = info.value
    assert 400 <= err.status < 500
    assert "CNRY" not in err.detail and "7777" not in err.detail
    return err


def test_not_dicom(engine: Deidentifier) -> None:
    assert _refused(engine, b"hello, world" * 20).extra["reason"] == "not-dicom"


def test_empty_and_preamble_only(engine: Deidentifier) -> None:
    _refused(engine, b"")
    _refused(engine, b"\x00" * 128 + b"DICM")


def test_truncated_at_every_region(engine: Deidentifier) -> None:
    data = to_bytes(canary_dataset("CT", 1))
    for cut in [*range(100, len(data) - 1, max(1, len(data) // 150)), len(data) - 1]:
        try:
            engine.deidentify(data[:cut], "tenant-a")
        except SightlineError as err:
            assert 400 <= err.status < 500


def test_truncated_pixel_data_is_refused(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.PixelData = ds.PixelData[:10]
    assert _refused(engine, to_bytes(ds)).extra["reason"] == "truncated"


def test_native_ybr_full_422_is_not_truncated(engine: Deidentifier) -> None:
    """Native YBR_FULL_422 holds two thirds of the decoded size (it was refused as truncated)."""
    ds = canary_dataset("CT", 1)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.PixelData = bytes(int(ds.Rows) * int(ds.Columns) * 2)
    out = pydicom.dcmread(BytesIO(engine.deidentify(to_bytes(ds), "tenant-a").data))
    assert out.PixelData == ds.PixelData
    ds.PixelData = ds.PixelData[:-2]
    assert _refused(engine, to_bytes(ds)).extra["reason"] == "truncated"


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "Rows"])
def test_missing_required_attribute(engine: Deidentifier, keyword: str) -> None:
    ds = canary_dataset("CT", 1)
    delattr(ds, keyword)
    if keyword in ("SOPInstanceUID", "SOPClassUID"):
        ds.SOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3")
        ds.SOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
        data = to_bytes(ds)
        ds2 = canary_dataset("CT", 1)
        delattr(ds2, keyword)
        ds2.file_meta = ds.file_meta
        buf = BytesIO()
        ds2.preamble = b"\x00" * 128
        ds2.save_as(buf, enforce_file_format=False)
        data = buf.getvalue()
    else:
        data = to_bytes(ds)
    _refused(engine, data)


def test_oversized(recipe: Recipe) -> None:
    small = Deidentifier(recipe, b"k" * 32, Limits(max_bytes=1000))
    assert _refused(small, to_bytes(canary_dataset("CT", 1))).status == 413


def _encapsulated(ds: Dataset, ts: UID) -> bytes:
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_compressed_pixel_bomb_declared_size(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 30000, 30000, 10
    err = _refused(engine, _encapsulated(ds, JPEGBaseline8Bit))
    assert err.extra["reason"] == "pixel-bomb" and err.status == 413


def test_compressed_pixel_bomb_ratio(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    ds.Rows, ds.Columns = 4000, 4000
    assert _refused(engine, _encapsulated(ds, RLELossless)).extra["reason"] == "pixel-bomb"


def _deflated(ds: Dataset) -> bytes:
    """``ds`` as a Deflated Explicit VR Little Endian file (pydicom deflates on write)."""
    data = to_bytes(ds)
    out = pydicom.dcmread(BytesIO(data))
    out.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = BytesIO()
    out.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _body(data: bytes) -> bytes:
    """The inflated data set of a deflated Part 10 file."""
    fp = BytesIO(data)
    read_preamble(fp, force=False)
    _read_file_meta_info(fp)
    return zlib.decompress(fp.read(), -zlib.MAX_WBITS)


def test_deflated_transfer_syntax_is_deidentified(engine: Deidentifier) -> None:
    result = engine.deidentify(_deflated(canary_dataset("CT", 1)), "tenant-a")
    out = pydicom.dcmread(BytesIO(result.data))
    assert out.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert out.PatientIdentityRemoved == "YES" and out.PatientID != "CNRYPID1"
    assert survivors(_body(result.data)) == [] and survivors(result.data) == []


def test_deflated_beyond_the_inflated_size_limit_is_413(recipe: Recipe) -> None:
    small = Deidentifier(recipe, b"k" * 32, Limits(max_inflated_bytes=64 * 1024))
    ds = canary_dataset("CT", 1)
    ds.Rows, ds.Columns = 512, 512  # 256 KiB of zeros deflate to a few hundred bytes
    ds.PixelData = bytes(512 * 512)
    data = _deflated(ds)
    assert len(data) < 8 * 1024
    err = _refused(small, data)
    assert err.status == 413 and err.extra["reason"] == "inflated-too-large"


def test_deflated_stream_that_does_not_inflate_is_refused(engine: Deidentifier) -> None:
    data = _deflated(canary_dataset("CT", 1))
    assert _refused(engine, data[:-40] + b"\xff" * 40).extra["reason"] == "malformed"


def test_deeply_nested_sequences(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    item = Dataset()
    for _ in range(40):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([item])
        item = outer
    ds.ReferencedImageSequence = Sequence([item])
    assert _refused(engine, to_bytes(ds)).extra["reason"] == "too-complex"


def test_element_length_past_end(engine: Deidentifier) -> None:
    data = bytearray(to_bytes(canary_dataset("CT", 1)))
    at = data.rfind(b"\x10\x00\x10\x00PN")  # top-level PatientName, explicit VR
    struct.pack_into("<H", data, at + 6, 0xFFF0)
    _refused(engine, bytes(data))
