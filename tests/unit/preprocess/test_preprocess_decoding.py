"""Decoding matrix on real files: transfer syntaxes, photometric interpretations, bit depths,
modality/VOI transforms and the multi-frame policy.

Colour files are the same 100x100 test card in many encodings: each must come out as the
card's known colours (exactly when lossless, within a few levels when lossy), which proves the
YBR to RGB conversion as well as the decoder.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from sightline_common.errors import InvalidInput
from sightline_common.imaging import read_dicom, to_rgb_uint8

from tests.unit.preprocess.preprocess_files import real_bytes, real_dataset, to_bytes

# The test card (SC_rgb*): colour of rows 5, 15, ..., 95 at column 50.
CARD = np.array(
    [
        [255, 0, 0], [255, 128, 128], [0, 255, 0], [128, 255, 128], [0, 0, 255],
        [128, 128, 255], [0, 0, 0], [64, 64, 64], [192, 192, 192], [255, 255, 255],
    ]
)  # fmt: skip

# (file, transfer syntax, photometric interpretation, bits, largest error allowed in levels)
COLOUR = [
    ("SC_rgb.dcm", "1.2.840.10008.1.2.1", "RGB", 8, 0),
    ("SC_rgb_expb.dcm", "1.2.840.10008.1.2.2", "RGB", 8, 0),
    ("SC_rgb_16bit.dcm", "1.2.840.10008.1.2.1", "RGB", 16, 0),
    ("SC_rgb_32bit.dcm", "1.2.840.10008.1.2.1", "RGB", 32, 0),
    ("SC_rgb_expb_16bit.dcm", "1.2.840.10008.1.2.2", "RGB", 16, 0),
    ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5", "RGB", 8, 0),
    ("SC_rgb_rle_16bit.dcm", "1.2.840.10008.1.2.5", "RGB", 16, 0),
    ("SC_rgb_rle_32bit.dcm", "1.2.840.10008.1.2.5", "RGB", 32, 0),
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", "RGB", 8, 0),  # JPEG lossless SV1
    ("SC_rgb_gdcm_KY.dcm", "1.2.840.10008.1.2.4.91", "RGB", 8, 0),  # JPEG 2000
    ("SC_rgb_dcmtk_+eb+cr.dcm", "1.2.840.10008.1.2.4.50", "RGB", 8, 2),  # JPEG baseline
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL", 8, 6),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL", 8, 6),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL_422", 8, 6),
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL_422", 8, 6),
    ("SC_rgb_jpeg_lossy_gdcm.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL", 8, 6),
    ("SC_rgb_jls_lossy_line.dcm", "1.2.840.10008.1.2.4.81", "RGB", 8, 3),  # JPEG-LS near-lossless
    ("SC_ybr_full_uncompressed.dcm", "1.2.840.10008.1.2.1", "YBR_FULL", 8, 6),
    ("SC_ybr_full_422_uncompressed.dcm", "1.2.840.10008.1.2.1", "YBR_FULL_422", 8, 6),
]


@pytest.mark.parametrize(
    ("name", "tsyntax", "photometric", "bits", "tolerance"), COLOUR, ids=[c[0] for c in COLOUR]
)
def test_colour_card_decodes_to_its_colours(
    name: str, tsyntax: str, photometric: str, bits: int, tolerance: int
) -> None:
    ds = read_dicom(real_bytes(name))
    assert ds.file_meta.TransferSyntaxUID == tsyntax
    assert ds.PhotometricInterpretation == photometric
    assert ds.BitsAllocated == bits
    rgb = to_rgb_uint8(ds)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[5::10, 50].astype(int) - CARD).max() <= tolerance


# Grey images stored in several transfer syntaxes must decode to the same pixels.
SAME_IMAGE = [
    ("MR_small.dcm", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                      "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]),
    ("693_UNCR.dcm", ["693_J2KR.dcm"]),  # JPEG 2000 lossless, 16-bit signed, 14 stored
    ("MR2_UNCR.dcm", ["MR2_J2KR.dcm"]),  # 12 of 16 bits stored
    ("US1_UNCR.dcm", ["US1_J2KR.dcm"]),  # JPEG 2000 YBR_RCT colour
    ("JPEG2000_UNC.dcm", ["JPEG2000.dcm"]),
    ("emri_small.dcm", ["emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm",
                        "emri_small_jpeg_2k_lossless.dcm", "emri_small_big_endian.dcm"]),
    ("OBXXXX1A.dcm", ["OBXXXX1A_rle.dcm", "OBXXXX1A_expb.dcm"]),  # palette colour
]  # fmt: skip


@pytest.mark.parametrize(("reference", "others"), SAME_IMAGE, ids=[s[0] for s in SAME_IMAGE])
def test_lossless_encodings_decode_identically(reference: str, others: list[str]) -> None:
    expected = to_rgb_uint8(read_dicom(real_bytes(reference)))
    for name in others:
        np.testing.assert_array_equal(to_rgb_uint8(read_dicom(real_bytes(name))), expected, err_msg=name)


@pytest.mark.parametrize(
    ("name", "tsyntax", "bits_stored"),
    [
        ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51", 12),  # JPEG extended, 12-bit
        ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70", 16),  # JPEG lossless, 16-bit
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", "1.2.840.10008.1.2.4.70", 8),
        ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81", 16),
        ("MR2_J2KI.dcm", "1.2.840.10008.1.2.4.91", 12),  # JPEG 2000 lossy
        ("image_dfl.dcm", "1.2.840.10008.1.2.1.99", 8),  # deflated
        ("CT_small.dcm", "1.2.840.10008.1.2.1", 16),
    ],
)
def test_grey_transfer_syntaxes_and_bit_depths(name: str, tsyntax: str, bits_stored: int) -> None:
    ds = read_dicom(real_bytes(name))
    assert ds.file_meta.TransferSyntaxUID == tsyntax and ds.BitsStored == bits_stored
    rgb = to_rgb_uint8(ds)
    assert rgb.shape == (ds.Rows, ds.Columns, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb.std() > 5  # an image, not a blank


def test_jpeg_extended_matches_jpeg_lossless_of_the_same_image() -> None:
    lossy = to_rgb_uint8(read_dicom(real_bytes("JPGExtended.dcm"))).astype(int)
    lossless = to_rgb_uint8(read_dicom(real_bytes("JPEG-LL.dcm"))).astype(int)
    assert np.abs(lossy - lossless).mean() < 3


def test_rescale_and_window_follow_the_header() -> None:
    """CT in HU (slope/intercept) through the header's window: below it black, above it white."""
    ds = read_dicom(real_bytes("693_UNCR.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    rgb = to_rgb_uint8(ds)[..., 0]
    assert (rgb[hu <= centre - 0.5 - (width - 1) / 2] == 0).all()
    assert (rgb[hu > centre - 0.5 + (width - 1) / 2] == 255).all()
    inside = (hu > centre - width / 4) & (hu < centre + width / 4)
    expected = np.round(((hu[inside] - (centre - 0.5)) / (width - 1) + 0.5) * 255)
    assert np.abs(rgb[inside] - expected).max() <= 1


def test_rescale_intercept_changes_the_windowed_image() -> None:
    ds = read_dicom(real_bytes("693_UNCR.dcm"))
    before = to_rgb_uint8(ds)
    ds.RescaleIntercept = float(ds.RescaleIntercept) + 200
    assert to_rgb_uint8(ds).mean() > before.mean() + 10


def test_voi_lut_sequence_is_applied() -> None:
    ds = read_dicom(real_bytes("vlut_04.dcm"))
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=float)
    expected = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True).astype(float)
    expected = np.round((expected - lut.min()) / (lut.max() - lut.min()) * 255)
    np.testing.assert_array_equal(to_rgb_uint8(ds)[..., 0], expected)


def test_modality_lut_sequence_is_applied() -> None:
    ds = read_dicom(real_bytes("mlut_18.dcm"))
    assert "ModalityLUTSequence" in ds
    values = apply_modality_lut(ds.pixel_array, ds).astype(float)
    expected = np.round((values - values.min()) / (values.max() - values.min()) * 255)
    np.testing.assert_array_equal(to_rgb_uint8(ds)[..., 0], expected)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_functions_put_the_centre_at_mid_grey(function: str) -> None:
    ds = read_dicom(real_bytes("MR_small.dcm"))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 500, 400, function
    values = ds.pixel_array.astype(float)  # MR_small has no rescale
    rgb = to_rgb_uint8(ds)[..., 0].astype(int)
    near_centre = np.abs(values - 500) < 3
    assert near_centre.any() and np.abs(rgb[near_centre] - 128).max() <= 4
    order = np.argsort(values.ravel())
    assert (np.diff(rgb.ravel()[order]) >= 0).all()  # monotonic in the stored value


def test_monochrome1_is_inverted() -> None:
    ds = read_dicom(real_bytes("6154"))  # CR, MONOCHROME1, 12 of 16 bits
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    as_m1 = to_rgb_uint8(ds).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME2"
    np.testing.assert_array_equal(as_m1, 255 - to_rgb_uint8(ds).astype(int))


def test_monochrome1_jpeg2000_matches_uncompressed() -> None:
    expected = to_rgb_uint8(read_dicom(real_bytes("RG3_UNCR.dcm")))
    np.testing.assert_array_equal(to_rgb_uint8(read_dicom(real_bytes("RG3_J2KR.dcm"))), expected)


def test_one_bit_segmentation_maps_to_black_and_white() -> None:
    rgb = to_rgb_uint8(read_dicom(real_bytes("liver_1frame.dcm")))
    assert set(np.unique(rgb)) == {0, 255}


# --- multi-frame policy -------------------------------------------------------------------


def test_multi_frame_uses_the_first_frame() -> None:
    ds = read_dicom(real_bytes("emri_small.dcm"))
    assert ds.NumberOfFrames == 10
    single = copy.deepcopy(ds)
    frame_bytes = ds.Rows * ds.Columns * 2
    single.PixelData = ds.PixelData[:frame_bytes]
    single.NumberOfFrames = 1
    np.testing.assert_array_equal(to_rgb_uint8(ds), to_rgb_uint8(single))
    second = copy.deepcopy(single)
    second.PixelData = ds.PixelData[frame_bytes : 2 * frame_bytes]
    assert not np.array_equal(to_rgb_uint8(second), to_rgb_uint8(ds))


def test_multi_frame_decodes_only_the_first_frame() -> None:
    """120 JPEG frames of 480x640: only frame 0 is decoded, so it is as fast as one image."""
    data = real_bytes("color3d_jpeg_baseline.dcm")
    start = time.perf_counter()
    rgb = to_rgb_uint8(read_dicom(data))
    assert rgb.shape == (480, 640, 3)
    assert time.perf_counter() - start < 2.0


def test_multi_frame_refused_by_the_refuse_policy() -> None:
    with pytest.raises(InvalidInput, match="frame policy"):
        to_rgb_uint8(read_dicom(real_bytes("emri_small.dcm")), frame_policy="refuse")
    assert to_rgb_uint8(read_dicom(real_bytes("MR_small.dcm")), frame_policy="refuse").shape == (64, 64, 3)


# --- bad input ---------------------------------------------------------------------------


def test_broken_jpeg_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="could not be decoded"):
        to_rgb_uint8(read_dicom(real_bytes("JPEG-lossy.dcm")))


def test_truncated_pixel_data_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="could not be decoded"):
        to_rgb_uint8(read_dicom(real_bytes("MR_truncated.dcm")))


def test_corrupt_compressed_stream_is_invalid_input() -> None:
    from pydicom.encaps import encapsulate, generate_frames

    ds = real_dataset("SC_rgb_gdcm_KY.dcm")  # JPEG 2000
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:40] + bytes(len(frame) - 40)])
    with pytest.raises(InvalidInput, match="could not be decoded"):
        to_rgb_uint8(read_dicom(to_bytes(ds)))


def test_empty_fragment_is_invalid_input() -> None:
    ds = real_dataset("SC_rgb_rle.dcm")
    item = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # (FFFE,E000), length 0
    ds.PixelData = item + item  # empty offset table, then one empty fragment
    with pytest.raises(InvalidInput):
        to_rgb_uint8(read_dicom(to_bytes(ds)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Rows": 0}, "zero-size"),
        ({"Columns": 0}, "zero-size"),
        ({"NumberOfFrames": 0}, "zero-size"),
        ({"Rows": 65535, "Columns": 65535}, "exceed"),
        ({"NumberOfFrames": 1_000_000}, "exceed"),
        ({"SamplesPerPixel": 2}, "SamplesPerPixel"),
        ({"SamplesPerPixel": 3}, "photometric"),
    ],
)
def test_absurd_headers_are_refused_before_decoding(changes: dict[str, int], message: str) -> None:
    ds = real_dataset("MR_small.dcm")
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match=message):
        to_rgb_uint8(read_dicom(to_bytes(ds)))
    assert time.perf_counter() - start < 1.0


def test_missing_pixel_data_is_invalid_input() -> None:
    ds = real_dataset("MR_small.dcm")
    del ds.PixelData
    with pytest.raises(InvalidInput, match=r"no .*pixel data"):
        to_rgb_uint8(read_dicom(to_bytes(ds)))


@pytest.mark.parametrize("data", [b"", b"not a dicom file" * 20, b"\0" * 128 + b"DICM" + b"\xff" * 64])
def test_non_dicom_bytes_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        read_dicom(data)


def test_unsupported_photometric_is_unprocessable() -> None:
    from sightline_common.errors import UnprocessableInput

    ds = real_dataset("MR_small.dcm")
    ds.PhotometricInterpretation = "HSV"
    with pytest.raises(UnprocessableInput):
        to_rgb_uint8(read_dicom(to_bytes(ds)))
