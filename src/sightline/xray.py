"""Wrap a grey image (a dataset's JPEG chest X-ray) as a DICOM radiograph, as a hospital would send it.

The 8-bit grey value ``g`` is stored as a 12-bit value ``16 g + 8`` and described so that the
display pipeline (modality LUT, then a window or a VOI LUT, then MONOCHROME1 inversion) gives
``g / 255`` back exactly: a decoder that skips or misapplies any step gets other pixels. Used by
tests, samples and benchmarks to exercise the real decode path with the dataset's images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

Photometric = Literal["MONOCHROME1", "MONOCHROME2"]
VOI = Literal["window", "lut", "none"]

#: Stored value of grey level g (12 bits): 16 g + 8, so 0..255 spans 8..4088.
STORED_SCALE, STORED_OFFSET = 16, 8
#: The modality LUT (rescale) of the window variant: stored - 1024, as a signed output range.
RESCALE_INTERCEPT = -1024.0


def grey_image(path: Path) -> NDArray[np.uint8]:
    """A JPEG (grey stored as RGB) as H x W uint8 grey (ITU-R 601 luma, PIL's ``L``)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def stored_values(grey: NDArray[np.uint8], photometric: Photometric) -> NDArray[np.uint16]:
    """The 12-bit stored values of ``grey``; MONOCHROME1 stores the inverted image (white = 0)."""
    g = grey.astype(np.int32)
    if photometric == "MONOCHROME1":
        g = 255 - g
    out: NDArray[np.uint16] = (STORED_SCALE * g + STORED_OFFSET).astype(np.uint16)
    return out


def wrap_radiograph(
    grey: NDArray[np.uint8],
    *,
    photometric: Photometric = "MONOCHROME2",
    voi: VOI = "window",
    modality: Literal["DX", "CR"] = "DX",
    body_part: str = "CHEST",
) -> Dataset:
    """A DX (or CR) instance holding ``grey`` as 12-bit pixels whose display is ``grey`` again.

    ``voi``: ``window`` (rescale intercept -1024, WindowCenter/Width), ``lut`` (a VOI LUT
    Sequence on the stored values) or ``none`` (the decoder falls back to the image's range).
    """
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError("expected an H x W uint8 grey image")
    sop_class = (
        DigitalXRayImageStorageForPresentation if modality == "DX" else ComputedRadiographyImageStorage
    )
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "AP"
    ds.PatientName = "Synthetic^Radiograph"
    ds.PatientID = "SYNTH-CXR"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    stored = stored_values(grey, photometric)
    if voi == "window":
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, RESCALE_INTERCEPT, "US"
        # DICOM's linear window maps c - 0.5 - (w - 1) / 2 to 0 and c - 0.5 + (w - 1) / 2 to 1.
        lo = STORED_OFFSET + RESCALE_INTERCEPT
        width = STORED_SCALE * 255 + 1
        ds.WindowCenter = lo + 0.5 + (width - 1) / 2
        ds.WindowWidth = width
        ds.VOILUTFunction = "LINEAR"
    elif voi == "lut":
        item = Dataset()
        entries = 4096
        item.add_new("LUTDescriptor", "US", [entries, 0, 12])
        index = np.arange(entries)
        levels = np.clip(np.round((index - STORED_OFFSET) / STORED_SCALE), 0, 255)
        item.add_new("LUTData", "OW", (levels * STORED_SCALE).astype("<u2").tobytes())
        item.LUTExplanation = "identity on the stored grey levels"
        ds.VOILUTSequence = Sequence([item])
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_sample(jpeg: Path, out: Path, *, photometric: Photometric, voi: VOI) -> Path:
    """A dataset JPEG as a deflated DX file (how the committed samples were made)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = wrap_radiograph(grey_image(jpeg), photometric=photometric, voi=voi)
    ds.PatientName, ds.PatientID = "Sample^ChestXray", "SAMPLE-CXR"
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out
