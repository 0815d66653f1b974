"""What a hospital may send, turned into DICOM instances for the one de-identification path.

Error messages name a limit or a part, never a value from the upload.
"""

from __future__ import annotations

import io
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    VLPhotographicImageStorage,
    generate_uid,
)
from sightline_common.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

VL_PHOTOGRAPHIC = VLPhotographicImageStorage
DICOM = "application/dicom"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
MAX_PHOTO_PIXELS = 40_000_000
_SITE = re.compile(r"^[A-Za-z][A-Za-z /_-]{0,63}$")
_DEVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/()+_-]{0,63}$")


class Sidecar(BaseModel):
    """The attributes a photographic model needs, sent beside a JPEG/PNG."""

    model_config = ConfigDict(extra="forbid")

    sex: Literal["M", "F", "O"] | None = Field(default=None, description="DICOM PatientSex")
    age: int | None = Field(default=None, ge=0, le=130, description="age in years")
    body_site: str | None = Field(default=None, max_length=64, description="e.g. 'back', 'lower extremity'")
    device: str | None = Field(
        default=None, max_length=64, description="acquisition device, e.g. 'dermoscope'"
    )


def parse_sidecar(raw: bytes) -> Sidecar:
    try:
        sidecar = Sidecar.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise InvalidInput("invalid sidecar JSON", fields=fields) from None
    if sidecar.body_site is not None and not _SITE.match(sidecar.body_site):
        raise InvalidInput("invalid sidecar body_site", fields=["body_site"])
    if sidecar.device is not None and not _DEVICE.match(sidecar.device):
        raise InvalidInput("invalid sidecar device", fields=["device"])
    return sidecar


def wrap_photo(data: bytes, content_type: str, sidecar: Sidecar) -> bytes:
    """A JPEG/PNG as a DICOM VL Photographic Image (XC, RGB, BurnedInAnnotation NO).

    BurnedInAnnotation is set explicitly: de-identification only lets photographic images
    through when it is exactly ``NO`` (a clinical photograph with text on it must not pass).
    """
    if content_type not in IMAGE_TYPES:
        raise UnsupportedMediaType("photographs must be image/jpeg or image/png")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PHOTO_PIXELS:
                raise PayloadTooLarge("image has too many pixels", limit=MAX_PHOTO_PIXELS)
            expected = {"image/jpeg": "JPEG", "image/png": "PNG"}[content_type]
            if img.format != expected:
                raise InvalidInput("image content does not match its content type")
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidInput("image could not be decoded") from exc

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_PHOTOGRAPHIC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = VL_PHOTOGRAPHIC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "XC"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.SeriesNumber = 1
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ContentDate = ""
    ds.ContentTime = ""
    ds.PatientSex = sidecar.sex or ""
    if sidecar.age is not None:
        ds.PatientAge = f"{sidecar.age:03d}Y"
    if sidecar.body_site:
        ds.BodyPartExamined = sidecar.body_site.upper().replace(" ", "")[:16]
    ds.Manufacturer = ""
    if sidecar.device:
        ds.ManufacturerModelName = sidecar.device
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "01" if content_type == "image/jpeg" else "00"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def split_multipart_related(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """The parts of a ``multipart/related`` body as (content type, bytes)."""
    if "boundary=" not in content_type:
        raise InvalidInput("multipart body without a boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise InvalidInput("malformed multipart body")
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            raise InvalidInput("malformed multipart part")
        parts.append((part.get_content_type(), payload))
    if not parts:
        raise InvalidInput("multipart body has no parts")
    return parts


def looks_like_dicom(data: bytes) -> bool:
    """Part 10 files carry 'DICM' at offset 128; anything else is refused before deid."""
    return len(data) > 132 and data[128:132] == b"DICM"


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


MediaKind = Literal["dicom", "multipart-related", "form-data"]


def classify(content_type: str | None) -> MediaKind:
    kind = media_type(content_type)
    if kind == DICOM:
        return "dicom"
    if kind == "multipart/related":
        return "multipart-related"
    if kind == "multipart/form-data":
        return "form-data"
    raise UnsupportedMediaType(
        "accepted: application/dicom, multipart/related; type=application/dicom, "
        "multipart/form-data (file parts, or an image/jpeg|png 'image' part with a JSON 'metadata' part)"
    )
