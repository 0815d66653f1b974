"""Byte-level writer: a data set back to a DICOM Part 10 file, raw elements copied as read.

Elements kept as read are copied through as their original bytes; only changed ones go through
pydicom's element writer. Sequences get defined lengths, so a reader can skip them without
parsing their items. The preamble is zeroed: it can hide a TIFF header or anything else.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, DeflatedExplicitVRLittleEndian
from sightline_common.errors import UnprocessableInput

from sightline_deid.core.decoding import ENCODING_ERRORS, attribute_name, element, unencodable, value

IMPLEMENTATION_VERSION = "SIGHTLINE_DEID1"
#: Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD


def write(ds: Dataset) -> bytes:
    """Encode ``ds`` in its own transfer syntax, behind fresh file meta and a zeroed preamble."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    fp.write(b"\x00" * 128 + b"DICM")
    sop_class = str(value(ds, "SOPClassUID"))
    if not sop_class.isascii():
        raise UnprocessableInput("attribute SOPClassUID is not a UID", reason="malformed",
                                 attribute="SOPClassUID")
    fp.write(file_meta(sop_class, str(value(ds, "SOPInstanceUID")), str(ts)))
    if ts == DeflatedExplicitVRLittleEndian:
        # The data set is written as Explicit VR Little Endian, then deflated (PS3.5 A.5).
        body = DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = True, False
        write_dataset(body, ds, default_encoding)
        deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = deflater.compress(body.getvalue()) + deflater.flush()
        fp.write(deflated + b"\x00" * (len(deflated) % 2))  # even length (PS3.5 A.5)
    else:
        write_dataset(fp, ds, default_encoding)
    return fp.getvalue()


def encoded(elem: DataElement, implicit: bool, little: bool) -> RawDataElement:
    """``elem`` encoded once, as a raw element that the writer copies through."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    holder = Dataset()
    holder.add(elem)
    write_dataset(fp, holder, default_encoding)
    size = 8 if implicit or elem.VR not in LONG_VRS else 12
    data = fp.getvalue()[size:]
    return RawDataElement(BaseTag(elem.tag), elem.VR, len(data), data, 0, implicit, little)


#: Header layouts by byte order: implicit VR, explicit VR with a 4-byte and with a 2-byte length.
_LAYOUTS = {little: (struct.Struct(e + "HHI"), struct.Struct(e + "HH2sHI"), struct.Struct(e + "HH2sH"))
            for little, e in ((True, "<"), (False, ">"))}


def header(tag: int, vr: str | None, length: int, implicit: bool, little: bool) -> bytes:
    implicit_layout, long_layout, short_layout = _LAYOUTS[little]
    if implicit:
        return implicit_layout.pack(tag >> 16, tag & 0xFFFF, length)
    if vr is None:
        raise ValueError("an explicit VR header needs a VR")
    if vr in LONG_VRS:
        return long_layout.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    if length > 0xFFFF:
        # Only a value this service rewrote can get here (e.g. thousands of short UIDs, each
        # replaced by a 2.25 pseudonym): too long for its VR's 16-bit length field.
        raise UnprocessableInput(f"attribute {attribute_name(tag)} is too long for its VR once "
                                 "de-identified", reason="too-complex", attribute=attribute_name(tag))
    return short_layout.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)


def write_dataset(fp: DicomBytesIO, ds: Dataset, parent_encoding: Any) -> None:
    """Write ``ds`` in ``fp``'s encoding: raw elements as read, decoded ones via pydicom."""
    implicit, little = fp.is_implicit_VR, fp.is_little_endian
    # Raw bytes are only valid where they were read in the same encoding and character set
    # (the condition pydicom's own writer uses); otherwise every element is re-encoded.
    raw_ok = (ds.original_encoding == (implicit, little)
              and ds.original_character_set == ds._character_set)
    charset = value(ds, "SpecificCharacterSet")
    encodings = parent_encoding if charset is None else charset
    for tag, elem in sorted(ds.items(), key=_tag_number):  # elements as stored, none decoded
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are never written (PS3.5 7.2)
        if isinstance(elem, RawDataElement):
            raw = elem.value
            if raw_ok and isinstance(raw, bytes) and (elem.VR is not None or implicit):
                if elem.length == _UNDEFINED:  # encapsulated pixel data: fragments as read
                    fp.write(header(tag, elem.VR, _UNDEFINED, implicit, little))
                    fp.write(raw)
                    fp.write(header(_SEQ_END, None, 0, True, little))
                else:
                    fp.write(header(tag, elem.VR, len(raw), implicit, little))
                    fp.write(raw)
                continue
            elem = element(ds, tag)
        if elem.VR == "SQ":
            seq = DicomBytesIO()
            seq.is_little_endian, seq.is_implicit_VR = little, implicit
            for item in elem.value or []:
                body = DicomBytesIO()
                body.is_little_endian, body.is_implicit_VR = little, implicit
                write_dataset(body, item, encodings)
                data = body.getvalue()
                seq.write(header(_ITEM, None, len(data), True, little))
                seq.write(data)
            data = seq.getvalue()
            fp.write(header(tag, "SQ", len(data), implicit, little))
            fp.write(data)
            continue
        try:
            write_data_element(fp, elem, encodings)
        except ENCODING_ERRORS as exc:
            raise unencodable(tag, exc) from None


def _tag_number(item: tuple[BaseTag, Any]) -> int:
    return int(item[0])


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """File meta information (group 0002, explicit VR little endian) with its group length."""

    def uid(text: str) -> bytes:
        raw = text.encode("ascii")
        return raw + b"\x00" * (len(raw) % 2)

    version = IMPLEMENTATION_VERSION.encode("ascii")
    elements = (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", uid(sop_class)),
        (0x00020003, "UI", uid(sop_instance)),
        (0x00020010, "UI", uid(transfer_syntax)),
        (0x00020012, "UI", uid(PYDICOM_IMPLEMENTATION_UID)),
        (0x00020013, "SH", version + b" " * (len(version) % 2)),
    )
    body = b"".join(header(tag, vr, len(v), False, True) + v for tag, vr, v in elements)
    return header(0x00020000, "UL", 4, False, True) + struct.pack("<I", len(body)) + body
