"""The self-check's read of an output: every element header walked to the end, into every item.

Written apart from :mod:`.writer` (it shares no code with it) so that a writer bug is not read
back by the same mistake. It is stricter about structure than pydicom's reader, which leaves a
defined-length sequence unread until a value inside it is asked for: here every item of every
sequence is walked, every length must end inside its container, tags must ascend within each
data set, and an undefined length appears only on a value written as read in fragments
(encapsulated pixel data), never on a sequence. It decodes no values except the few the check
compares.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

#: Explicit VRs with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                       b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
#: Top-level attributes whose values the check reads: SOPClassUID, SOPInstanceUID,
#: PatientIdentityRemoved.
WANTED = frozenset({0x00080016, 0x00080018, 0x00120062})


class Unreadable(ValueError):
    """The output does not read back as a well-formed Part 10 file."""


def read_back(out: bytes, max_depth: int = 64) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """``(file meta values, top-level values of WANTED)`` of a Part 10 file, after walking all of it.

    Raises :class:`Unreadable` on anything malformed: no DICM prefix, a length that runs past its
    container, tags out of order, a sequence or item of undefined length, fragments that do not
    end in a sequence delimiter, nesting beyond ``max_depth``, or a deflated body that does not
    inflate.
    """
    if len(out) < 144 or out[128:132] != b"DICM":
        raise Unreadable("no preamble and DICM prefix")
    tag, vr, length, pos = _header(out, 132, len(out), False, True)
    if tag != 0x00020000 or vr != b"UL" or length != 4:
        raise Unreadable("file meta does not start with its group length")
    meta_end = pos + 4 + struct.unpack_from("<I", out, pos)[0]
    if meta_end > len(out):
        raise Unreadable("file meta group length runs past the end")
    meta: dict[int, bytes] = {}
    _walk(out, pos + 4, meta_end, False, True, 0, max_depth, meta, None)
    syntax = meta.get(0x00020010, b"").rstrip(b"\x00 ").decode("ascii", "replace")
    body, start = out, meta_end
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            body, start = zlib.decompress(out[meta_end:], -zlib.MAX_WBITS), 0
        except zlib.error as exc:
            raise Unreadable("deflated data set does not inflate") from exc
    try:
        ts = UID(syntax)
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
    except ValueError as exc:
        raise Unreadable("file meta names no known transfer syntax") from exc
    found: dict[int, bytes] = {}
    _walk(body, start, len(body), implicit, little, 0, max_depth, found, WANTED)
    return meta, found


_Header = tuple[int, bytes | None, int, int]


def _header(buf: bytes, pos: int, end: int, implicit: bool, little: bool) -> _Header:
    """``(tag, explicit VR or None, length, position of the value)`` of the element at ``pos``."""
    e = "<" if little else ">"
    if pos + 8 > end:
        raise Unreadable("element header runs past its container")
    group, elem = struct.unpack_from(e + "HH", buf, pos)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:  # item and delimiter headers are never explicit
        return tag, None, struct.unpack_from(e + "I", buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4:pos + 6]
    if vr in _LONG_VRS:
        if pos + 12 > end:
            raise Unreadable("element header runs past its container")
        return tag, vr, struct.unpack_from(e + "I", buf, pos + 8)[0], pos + 12
    return tag, vr, struct.unpack_from(e + "H", buf, pos + 6)[0], pos + 8


def _walk(buf: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int, max_depth: int,
          found: dict[int, bytes], wanted: frozenset[int] | None) -> None:
    """Walk the elements of one data set that occupies ``buf[pos:end]``."""
    if depth > max_depth:
        raise Unreadable("sequences nested too deeply")
    previous = -1
    while pos < end:
        tag, vr, length, pos = _header(buf, pos, end, implicit, little)
        if tag <= previous:
            raise Unreadable("data element tags are not in ascending order")
        previous = tag
        is_sequence = vr == b"SQ" or (vr is None and _is_sequence(tag))
        if length == _UNDEFINED:
            # Written as read: encapsulated pixel data (or another non-sequence value in
            # fragments); the writer gives every sequence a defined length.
            if is_sequence:
                raise Unreadable("sequence of undefined length")
            pos = _fragments(buf, pos, end, little)
            continue
        if pos + length > end:
            raise Unreadable("element value runs past its container")
        if is_sequence:
            _items(buf, pos, pos + length, implicit, little, depth, max_depth)
        elif wanted is None or tag in wanted:
            found[tag] = buf[pos:pos + length]
        pos += length


def _items(buf: bytes, pos: int, end: int, implicit: bool, little: bool, depth: int,
           max_depth: int) -> None:
    while pos < end:
        tag, _, length, pos = _header(buf, pos, end, True, little)
        if tag != _ITEM or length == _UNDEFINED or pos + length > end:
            raise Unreadable("sequence item malformed or of undefined length")
        _walk(buf, pos, pos + length, implicit, little, depth + 1, max_depth, {}, frozenset())
        pos += length


def _fragments(buf: bytes, pos: int, end: int, little: bool) -> int:
    """Skip the items of encapsulated pixel data; the position after its sequence delimiter."""
    while True:
        tag, _, length, pos = _header(buf, pos, end, True, little)
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED or pos + length > end:
            raise Unreadable("pixel data fragment malformed")
        pos += length


def _is_sequence(tag: int) -> bool:
    """Whether an implicit-VR element is a sequence by the dictionary (a private one is opaque)."""
    if (tag >> 16) & 1:
        return False
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False
