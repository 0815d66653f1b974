"""The one place where the input's bytes become values, and where a failure to do so means bad input.

pydicom reads a file in two steps: :func:`pydicom.dcmread` splits it into raw elements, and an
element's value is decoded only when it is asked for. Both steps run pydicom on bytes the caller
sent, so an exception from them is the caller's malformed file (a 4xx). Every other part of the
engine reaches values through the functions here; an exception anywhere else is a bug and
propagates as one.
"""

from __future__ import annotations

import logging
import struct
import warnings
import zlib
from typing import Any, cast

from pydicom import config as pydicom_config
from pydicom.charset import encode_string
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.values import convert_value
from sightline_common.errors import UnprocessableInput

#: What pydicom raises while parsing or decoding malformed bytes: truncation (EOF, struct),
#: bad values (ValueError, TypeError, Overflow), undecodable text (Unicode, unknown codec),
#: unsupported encodings and runaway nesting. ``AttributeError``, ``RuntimeError`` and
#: ``MemoryError`` are deliberately absent: from a value we asked for, they mean a bug.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError, ValueError, TypeError, LookupError, EOFError, OSError, OverflowError,
    NotImplementedError, RecursionError, struct.error, zlib.error,
)


def quiet_pydicom() -> None:
    """Stop pydicom from validating values on read and from logging them.

    pydicom's validation warnings quote the offending value ("Invalid value for VR UI: '...'"),
    which would put identifiers into logs. The service checks what it needs itself.
    """
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom\..*")


def attribute_name(tag: int) -> str:
    """A tag's keyword, or its number for private and unknown tags (never a value)."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def malformed(tag: int, exc: BaseException) -> UnprocessableInput:
    """The 4xx for an attribute whose bytes pydicom could not decode."""
    name = attribute_name(tag)
    return UnprocessableInput(f"attribute {name} could not be decoded ({type(exc).__name__})",
                              reason="malformed", attribute=name)


def value(ds: Dataset, keyword: str) -> Any:
    """An attribute's value (None if absent), decoded without replacing the element read.

    Reading through ``ds.<keyword>`` would store the decoded element, which then could no
    longer be copied through as its original bytes.
    """
    return value_of(ds, cast(int, tag_for_keyword(keyword)))


def value_of(ds: Dataset, tag: int) -> Any:
    """:func:`value` by tag."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        try:
            elem = convert_raw_data_element(elem, encoding=ds.original_character_set, ds=ds)
        except INPUT_ERRORS as exc:
            raise malformed(tag, exc) from None
    return elem.value


#: What encoding a decoded value in the input's character set raises.
ENCODING_ERRORS: tuple[type[Exception], ...] = (UnicodeError, LookupError)


def unencodable(tag: int, exc: BaseException) -> UnprocessableInput:
    """The 4xx for a value decoded from the input that its declared character set cannot hold
    again (an unknown or inconsistent SpecificCharacterSet)."""
    name = attribute_name(tag)
    return UnprocessableInput(f"attribute {name} cannot be encoded in the file's character set "
                              f"({type(exc).__name__})", reason="malformed", attribute=name)


def encode_text(text: str, encodings: Any, tag: int) -> bytes:
    """``text`` encoded in the character set it was decoded from, as pydicom's writer does."""
    try:
        # A data set without SpecificCharacterSet was read in the default, named as one string.
        return encode_string(text, [encodings] if isinstance(encodings, str) else encodings)
    except ENCODING_ERRORS as exc:
        raise unencodable(tag, exc) from None


def raw_value(raw: RawDataElement, vr: str, encodings: Any) -> Any:
    """A raw element's value decoded as pydicom decodes it (``vr`` known, not SQ, UN or
    ambiguous), without storing a decoded element anywhere."""
    try:
        return convert_value(vr, raw, encodings)
    except INPUT_ERRORS as exc:
        raise malformed(int(raw.tag), exc) from None


def element(ds: Dataset, tag: int) -> DataElement:
    """The decoded element at ``tag``, stored in ``ds`` in place of the raw one (it must exist)."""
    if tag not in ds:
        raise KeyError(tag)  # a caller's bug, not the input's
    try:
        return ds[tag]
    except INPUT_ERRORS as exc:
        raise malformed(tag, exc) from None


def element_or_none(ds: Dataset, tag: int) -> DataElement | None:
    """:func:`element`, or None where ``ds`` has no ``tag``."""
    return element(ds, tag) if tag in ds else None


def int_value(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """An integer attribute's value (``default`` where absent, empty or zero); a value that is not
    an integer is malformed input."""
    raw = value(ds, keyword)
    if not raw and default is not None:
        return default
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise malformed(cast(int, tag_for_keyword(keyword)), exc) from None
