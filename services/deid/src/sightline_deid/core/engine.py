"""De-identify one DICOM Part 10 file with a recipe: parse, check, transform, write, re-check.

Pure logic with no web framework: the API layer hands in bytes and a tenant and gets bytes and
a summary back. Every failure is a typed :mod:`sightline_common.errors` error whose message names
an attribute keyword or a limit, never a value from the file.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import struct
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
)
from sightline_common.errors import InvalidInput, PayloadTooLarge, UnprocessableInput

from sightline_deid.core.pseudonym import Pseudonymizer
from sightline_deid.core.recipe import BurnedInRule, Recipe, Rule, SafePrivate

#: Exceptions pydicom and numpy raise on malformed input; mapped to 4xx, never a 500.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError, ValueError, TypeError, KeyError, IndexError, EOFError, OSError,
    OverflowError, NotImplementedError, AttributeError, RuntimeError, zlib.error, MemoryError,
    RecursionError, UnicodeError, struct.error,
)

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
REQUIRED_FOR_PIXELS = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation")
IMPLEMENTATION_VERSION = "SIGHTLINE_DEID1"
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                         "UC", "UI", "UR", "UT"})
_DUMMY: dict[str, Any] = {
    "PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED", "LT": "ANONYMIZED",
    "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "AE": "ANONYMIZED", "UR": "",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "IS": "0", "DS": "0", "AS": "000Y",
}
_WORD = re.compile(r"\w+", re.UNICODE)
#: Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD
#: Values at least this long are not copied again by the self-check re-parse.
_VERIFY_DEFER = 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may make the service parse, decode or allocate."""

    max_bytes: int = 64 * 1024 * 1024
    max_decoded_pixel_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: float = 2000.0
    max_sequence_depth: int = 16
    max_elements: int = 200_000


@dataclass
class Summary:
    """What was done, as counts only (safe to return, log and export as metrics)."""

    recipe: str
    recipe_version: str
    actions: Counter[str] = field(default_factory=Counter)
    uncovered_removed: int = 0
    private_removed: int = 0
    private_kept: int = 0
    burned_in: str = "not-applicable"
    date_shifted: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "recipe_version": self.recipe_version,
            "actions": dict(sorted(self.actions.items())),
            "uncovered_removed": self.uncovered_removed,
            "private_removed": self.private_removed,
            "private_kept": self.private_kept,
            "burned_in": self.burned_in,
            "date_shifted": self.date_shifted,
        }


@dataclass(frozen=True)
class Result:
    """The de-identified file and the summary of what was done."""

    data: bytes
    summary: Summary


class _Context:
    """State of one de-identification: pseudonymizer, date shift, counters, element budget."""

    def __init__(self, recipe: Recipe, pseudo: Pseudonymizer, limits: Limits) -> None:
        self.recipe = recipe
        self.pseudo = pseudo
        self.limits = limits
        self.summary = Summary(recipe.name, recipe.version)
        self.shift_days = 0
        self.elements = 0

    def count(self, action: str) -> None:
        self.summary.actions[action] += 1


def quiet_pydicom() -> None:
    """Stop pydicom from validating values on read and from logging them.

    pydicom's validation warnings quote the offending value ("Invalid value for VR UI: '...'"),
    which would put identifiers into logs. The service checks what it needs itself.
    """
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom\..*")


class Deidentifier:
    """Applies one recipe; holds no per-request state, so one instance serves all threads."""

    def __init__(self, recipe: Recipe, secret: bytes, limits: Limits | None = None) -> None:
        self.recipe = recipe
        self._secret = secret
        self.limits = limits or Limits()
        self._pseudonymizers: dict[str, Pseudonymizer] = {}
        self._marks: dict[tuple[bool, bool, bool],
                          tuple[list[RawDataElement], dict[str, RawDataElement]]] = {}
        quiet_pydicom()

    def _pseudonymizer(self, tenant: str) -> Pseudonymizer:
        """The tenant's pseudonymizer, its derived key computed once per tenant."""
        pseudo = self._pseudonymizers.get(tenant)
        if pseudo is None:
            if len(self._pseudonymizers) >= 4096:  # bound memory under many distinct tenants
                self._pseudonymizers.clear()
            pseudo = self._pseudonymizers[tenant] = Pseudonymizer(self._secret, tenant)
        return pseudo

    # ------------------------------------------------------------------ entry point
    def deidentify(self, data: bytes, tenant: str) -> Result:
        """De-identify a DICOM Part 10 file for ``tenant`` (raises typed 4xx errors)."""
        start = time.perf_counter()
        if len(data) > self.limits.max_bytes:
            raise PayloadTooLarge(f"file exceeds the {self.limits.max_bytes} byte limit", reason="oversized")
        ds = self._parse(data)
        ctx = _Context(self.recipe, self._pseudonymizer(tenant), self.limits)
        try:
            self._check_required(ds)
            self._check_pixels(ds, len(data))
            blank_rule = self._burned_in(ds, ctx)
            ctx.shift_days = self._date_shift(ds, ctx)
            if blank_rule is not None:
                self._blank(ds, blank_rule)
                ctx.summary.burned_in = f"blanked:{blank_rule.name}"
            self._walk(ds, ctx, depth=0)
            self._mark(ds, ctx, pixels_cleaned=blank_rule is not None)
            out = self._write(ds)
        except (InvalidInput, UnprocessableInput, PayloadTooLarge):
            raise
        except PARSE_ERRORS as exc:
            raise UnprocessableInput(
                f"the file could not be processed ({type(exc).__name__})", reason="malformed"
            ) from None
        self._verify(out)
        ctx.summary.seconds = time.perf_counter() - start
        return Result(out, ctx.summary)

    # ------------------------------------------------------------------ parsing and checks
    def _parse(self, data: bytes) -> Dataset:
        fp = BytesIO(data)
        try:
            read_preamble(fp, force=False)
            meta = _read_file_meta_info(fp)
        except PARSE_ERRORS:
            raise InvalidInput("not a DICOM Part 10 file (no preamble, DICM prefix or file meta)",
                               reason="not-dicom") from None
        ts = meta.get("TransferSyntaxUID")
        if not ts:
            raise InvalidInput("file meta lacks TransferSyntaxUID", reason="missing-attribute")
        if UID(ts) == DeflatedExplicitVRLittleEndian:
            # pydicom inflates a deflated data set in one call with no size bound: a zip bomb.
            raise UnprocessableInput("deflated transfer syntax is not accepted", reason="unsupported")
        if not UID(ts).is_transfer_syntax:
            raise UnprocessableInput("unknown transfer syntax", reason="unsupported")
        try:
            # Values are converted lazily, only for attributes the recipe keeps or changes; a
            # malformed value met later is still mapped to a 4xx by ``deidentify``.
            ds = pydicom.dcmread(BytesIO(data), force=False)
        except (InvalidInput, UnprocessableInput):
            raise
        except PARSE_ERRORS as exc:
            raise InvalidInput(f"DICOM data set could not be parsed ({type(exc).__name__}): truncated "
                               "or malformed", reason="malformed") from None
        return ds

    @staticmethod
    def _check_required(ds: Dataset) -> None:
        names = REQUIRED + (REQUIRED_FOR_PIXELS if "PixelData" in ds else ())
        for keyword in names:
            if _value(ds, keyword) in (None, "", b""):
                raise UnprocessableInput(f"required attribute {keyword} is missing or empty",
                                         reason="missing-attribute", attribute=keyword)

    def _check_pixels(self, ds: Dataset, encoded_total: int) -> None:
        if "PixelData" not in ds:
            return
        rows, cols = int(_value(ds, "Rows")), int(_value(ds, "Columns"))
        samples, bits = int(_value(ds, "SamplesPerPixel")), int(_value(ds, "BitsAllocated"))
        frames = int(_value(ds, "NumberOfFrames") or 1)
        if min(rows, cols, samples, bits, frames) <= 0 or (bits % 8 not in (0,) and bits != 1):
            raise UnprocessableInput("image pixel description is invalid", reason="invalid-pixels")
        expected = (rows * cols * samples * frames * bits + 7) // 8
        if expected > self.limits.max_decoded_pixel_bytes:
            raise PayloadTooLarge(
                f"decoded pixel data would exceed {self.limits.max_decoded_pixel_bytes} bytes",
                reason="pixel-bomb")
        ts = UID(ds.file_meta.TransferSyntaxUID)
        stored = len(ds.get_item(0x7FE00010).value or b"")
        if not ts.is_compressed:
            if stored < expected:
                raise InvalidInput("pixel data is shorter than its description (truncated)",
                                   reason="truncated")
        elif stored == 0 or expected / max(stored, 1) > self.limits.max_compression_ratio:
            raise UnprocessableInput(
                f"compressed pixel data expands more than {self.limits.max_compression_ratio:g}x",
                reason="pixel-bomb")

    def _burned_in(self, ds: Dataset, ctx: _Context) -> BurnedInRule | None:
        """Apply the burned-in annotation policy: None to pass, a rule to blank, or refuse."""
        policy = self.recipe.burned_in
        sop = str(_value(ds, "SOPClassUID"))
        modality = str(_value(ds, "Modality") or "")
        bia_elem = _value(ds, "BurnedInAnnotation")
        bia = str(bia_elem).strip().upper() if bia_elem not in (None, "") else None
        risky = bia == "YES" or sop in policy.risky_sop_classes or modality in policy.risky_modalities
        if not risky:
            ctx.summary.burned_in = "not-applicable"
            return None
        for rule in policy.rules:
            if rule.sop_classes and sop not in rule.sop_classes:
                continue
            if rule.modalities and modality not in rule.modalities:
                continue
            if rule.burned_in_annotation is not None and bia != rule.burned_in_annotation:
                continue
            if rule.action == "pass":
                ctx.summary.burned_in = f"passed:{rule.name}"
                return None
            if rule.action == "blank":
                if "PixelData" not in ds:
                    break
                return rule
            break
        if policy.default == "pass":
            ctx.summary.burned_in = "passed:default"
            return None
        raise UnprocessableInput(
            "the image may carry burned-in annotation and the recipe has no rule that clears it",
            reason="burned-in-annotation", recipe=self.recipe.label)

    def _blank(self, ds: Dataset, rule: BurnedInRule) -> None:
        """Overwrite the rule's pixel regions with zeros (decompressing first if needed)."""
        if int(ds.BitsAllocated) % 8:
            raise UnprocessableInput("cannot blank regions of 1-bit pixel data",
                                     reason="burned-in-annotation")
        if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            # A fresh random SOP Instance UID here would make the pseudonym differ on every run.
            ds.decompress(generate_instance_uid=False)
        arr = np.array(ds.pixel_array, copy=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        view = arr if frames > 1 else arr[np.newaxis, ...]
        rows, cols = int(ds.Rows), int(ds.Columns)
        for region in rule.regions:
            y1 = rows if region.height is None else min(rows, region.y + region.height)
            x1 = cols if region.width is None else min(cols, region.x + region.width)
            view[:, region.y:y1, region.x:x1, ...] = 0
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
        ds.BurnedInAnnotation = "NO"

    def _date_shift(self, ds: Dataset, ctx: _Context) -> int:
        if not self.recipe.options.get("retain_longitudinal_modified_dates"):
            return 0
        key = str(_value(ds, "PatientID") or "").strip()
        if key:
            key = "pid:" + str(_value(ds, "IssuerOfPatientID") or "") + "/" + key
        else:
            key = "study:" + str(_value(ds, "StudyInstanceUID"))
        ctx.summary.date_shifted = True
        lo, hi = self.recipe.date_shift_days
        return ctx.pseudo.date_offset_days(key, lo, hi)

    # ------------------------------------------------------------------ the walk
    def _walk(self, ds: Dataset, ctx: _Context, depth: int) -> None:
        if depth > self.limits.max_sequence_depth:
            raise UnprocessableInput("sequences nested too deeply", reason="too-complex")
        has_private = False
        tags = list(ds.keys())
        ctx.elements += len(tags)
        if ctx.elements > self.limits.max_elements:
            raise UnprocessableInput("too many data elements", reason="too-complex")
        for tag in tags:
            t = int(tag)
            if (t >> 16) & 1:
                has_private = True
                continue
            if t & 0xFFFF == 0 or (t >> 16) in (0x0000, 0x0002):
                # Group lengths, command set and file meta never belong in a stored data set.
                del ds[tag]
                ctx.count("X")
                continue
            rule = self.recipe.action_for(t)
            if rule is None:
                del ds[tag]
                ctx.count("X")
                ctx.summary.uncovered_removed += 1
                continue
            self._apply(ds, tag, rule, ctx, depth)
        if has_private:
            self._private(ds, ctx, depth)

    def _apply(self, ds: Dataset, tag: BaseTag, rule: Rule, ctx: _Context, depth: int) -> None:
        action = rule.action
        ctx.count(action)
        if action == "X":
            del ds[tag]
            return
        raw = ds.get_item(tag)
        if action == "K" and not _may_hold_items(raw):
            # Kept as read: the value is never decoded, and its bytes are written back unchanged.
            return
        if isinstance(raw, RawDataElement) and self._apply_raw(ds, raw, action, ctx):
            return
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            if action in ("Z", "D"):
                # A dummy sequence is an empty one: items of identity sequences (person or
                # operator identification) hold codes that identify, so none is kept.
                elem.value = Sequence([])
            else:  # K, C, U, U*, H on a sequence: keep it, de-identify its items.
                for item in elem.value:
                    self._walk(item, ctx, depth + 1)
            return
        if action == "K":
            return
        if action == "Z":
            elem.value = "" if vr in _STRING_VRS else None
        elif action in ("U", "U*"):
            elem.value = self._map(elem.value, ctx.pseudo.uid)
        elif action == "H":
            elem.value = self._map(elem.value, ctx.pseudo.identifier)
        elif action == "D":
            if vr == "UI":
                elem.value = self._map(elem.value, ctx.pseudo.uid)
            elif vr in _DUMMY:
                elem.value = _DUMMY[vr]
            elif vr in _STRING_VRS:
                elem.value = ""
            elif vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN") and isinstance(elem.value, bytes):
                elem.value = b"\x00" * len(elem.value)  # same length, no information
            else:
                elem.value = None
        elif action == "C":
            self._clean(elem, ctx)

    def _apply_raw(self, ds: Dataset, raw: RawDataElement, action: str, ctx: _Context) -> bool:
        """Apply an action that needs no character-set decoding straight to the encoded value.

        Returns False where the element needs the general path (sequences, unknown or
        ambiguous VRs, free text). The results are the bytes the general path would write.
        """
        value = raw.value
        vr = raw.VR or _dictionary_vr(raw.tag)
        if value is None or vr is None or vr in ("SQ", "UN") or " " in vr:
            return False
        new: bytes
        if action == "Z":
            new = b""
        elif vr == "UI" and action in ("U", "U*", "D"):
            new = _map_uids(value, ctx.pseudo.uid)
        elif action == "D":
            if vr in _DUMMY:
                new = _pad(_DUMMY[vr].encode("ascii"), b" ")
            elif vr in _BYTES_VRS:
                new = b"\x00" * (len(value) + len(value) % 2)  # same length, no information
            else:
                new = b""
        elif action == "C" and vr in ("DA", "DT"):
            new = self._shift_encoded(value, ctx)
        elif action == "C" and vr == "TM":
            return True  # whole-day shifts keep times of day
        else:
            return False
        ds[raw.tag] = RawDataElement(raw.tag, raw.VR, len(new), new, raw.value_tell,
                                     raw.is_implicit_VR, raw.is_little_endian)
        return True

    def _shift_encoded(self, value: bytes, ctx: _Context) -> bytes:
        if ctx.shift_days == 0 and not self.recipe.options.get("retain_longitudinal_modified_dates"):
            return b""
        items = value.decode(default_encoding).rstrip(" \x00").split("\\")
        shifted = [self._shift(v, ctx.shift_days) for v in items if v != ""]
        if any(v is None for v in shifted):
            return b""  # unparseable dates are emptied, never passed through
        return _pad("\\".join(cast(list[str], shifted)).encode(default_encoding), b" ")

    @staticmethod
    def _map(value: Any, fn: Any) -> Any:
        if value in (None, ""):
            return value
        if isinstance(value, MultiValue | list):
            return [fn(str(v)) for v in value]
        return fn(str(value))

    def _clean(self, elem: DataElement, ctx: _Context) -> None:
        vr = elem.VR
        if vr in ("DA", "DT"):
            if ctx.shift_days == 0 and not self.recipe.options.get("retain_longitudinal_modified_dates"):
                elem.value = ""
                return
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            shifted = [self._shift(str(v), ctx.shift_days) for v in values if v not in (None, "")]
            if any(s is None for s in shifted):
                elem.value = ""  # unparseable dates are emptied, never passed through
            else:
                elem.value = shifted if len(shifted) > 1 else (shifted[0] if shifted else "")
        elif vr == "TM" or (vr in ("SH",) and elem.keyword == "TimezoneOffsetFromUTC"):
            # Whole-day shifts keep times of day; intervals within a day are preserved exactly.
            return
        elif vr in ("LO", "SH", "LT", "ST", "UT", "UC", "CS", "PN"):
            if not isinstance(elem.value, str | MultiValue | list):
                elem.value = ""
                return
            value = elem.value
            text = "\\".join(map(str, value)) if isinstance(value, MultiValue | list) else value
            elem.value = self.scrub(text)
        else:
            elem.value = "" if vr in _STRING_VRS else None

    def scrub(self, text: str) -> str:
        """Keep only vocabulary words of a free-text value; every other word becomes ``*``."""
        vocab = self.recipe.vocabulary
        words = [w if w.lower() in vocab else "*" for w in _WORD.findall(text)]
        out: list[str] = []
        for w in words:
            if w == "*" and out and out[-1] == "*":
                continue
            out.append(w)
        return " ".join(out)

    @staticmethod
    def _shift(value: str, days: int) -> str | None:
        value = value.strip()
        if len(value) < 8 or not value[:8].isdigit():
            return None
        try:
            day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8])) + dt.timedelta(days=days)
        except (ValueError, OverflowError):
            return None
        return f"{day.year:04d}{day.month:02d}{day.day:02d}" + value[8:]

    def _private(self, ds: Dataset, ctx: _Context, depth: int) -> None:
        """Remove private attributes, keeping only the recipe's safe list under its option."""
        retain = self.recipe.private_rule.action == "C"
        kept_creators: set[int] = set()
        creators: list[int] = []
        for tag in list(ds.keys()):
            t = int(tag)
            group, element = t >> 16, t & 0xFFFF
            if not group & 1:
                continue
            if element < 0x0100:
                creators.append(t)
                continue
            keep = False
            if retain:
                creator_tag = (group << 16) | (element >> 8)
                creator = ds.get(creator_tag)
                if creator is not None:
                    key = SafePrivate(group, str(creator.value).strip(), element & 0xFF)
                    keep = key in self.recipe.safe_private and ds[tag].VR in self.recipe.private_numeric_vrs
                    if keep:
                        kept_creators.add(creator_tag)
            if keep:
                ctx.count("K")
                ctx.summary.private_kept += 1
            else:
                del ds[tag]
                ctx.count("X")
                ctx.summary.private_removed += 1
        for t in creators:
            if t not in kept_creators:
                del ds[t]
                ctx.count("X")
                ctx.summary.private_removed += 1

    # ------------------------------------------------------------------ marking and output
    def _mark(self, ds: Dataset, ctx: _Context, *, pixels_cleaned: bool) -> None:
        ts = UID(ds.file_meta.TransferSyntaxUID)
        key = (pixels_cleaned, ts.is_implicit_VR, ts.is_little_endian)
        marks = self._marks.get(key)
        if marks is None:
            # The same for every file of one recipe and encoding: encoded once, as raw elements.
            mark = Dataset()
            mark.PatientIdentityRemoved = "YES"
            mark.DeidentificationMethod = f"Sightline {self.recipe.label} PS3.15 E.1-1"[:64]
            items = []
            for value, meaning in self.recipe.method_codes(pixels_cleaned=pixels_cleaned):
                item = Dataset()
                item.CodeValue = value
                item.CodingSchemeDesignator = "DCM"
                item.CodeMeaning = meaning
                items.append(item)
            mark.DeidentificationMethodCodeSequence = Sequence(items)
            common = [_encoded(elem, ts.is_implicit_VR, ts.is_little_endian) for elem in mark]
            temporal = {}
            for value in ("MODIFIED", "REMOVED"):
                elem = DataElement(0x00280303, "CS", value)  # LongitudinalTemporalInformationModified
                temporal[value] = _encoded(elem, ts.is_implicit_VR, ts.is_little_endian)
            marks = self._marks[key] = (common, temporal)
        common, temporal = marks
        for raw in common:
            ds[raw.tag] = raw
        ds[0x00280303] = temporal["MODIFIED" if ctx.shift_days else "REMOVED"]

    @staticmethod
    def _write(ds: Dataset) -> bytes:
        """Encode the data set in its own transfer syntax, behind fresh file meta and preamble.

        Elements kept as read are copied through as their original bytes; only changed ones go
        through pydicom's element writer. The preamble is zeroed: it can hide a TIFF header or
        anything else.
        """
        ts = UID(ds.file_meta.TransferSyntaxUID)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
        fp.write(b"\x00" * 128 + b"DICM")
        fp.write(_file_meta(str(_value(ds, "SOPClassUID")), str(_value(ds, "SOPInstanceUID")), str(ts)))
        _write_dataset(fp, ds, default_encoding)
        return fp.getvalue()

    @staticmethod
    def _verify(out: bytes) -> None:
        """Re-parse the output: never return a file that does not read back consistently."""
        try:
            # Every element is parsed to the end of the file, but long values (pixel data) are
            # skipped rather than copied: they were copied through unchanged.
            back = pydicom.dcmread(BytesIO(out), force=False, defer_size=_VERIFY_DEFER)
            ok = (back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
                  and back.file_meta.MediaStorageSOPClassUID == back.SOPClassUID
                  and back.PatientIdentityRemoved == "YES")
        except PARSE_ERRORS:
            ok = False
        if not ok:
            raise UnprocessableInput("de-identified output failed its validity check",
                                     reason="invalid-output")


def _may_hold_items(elem: DataElement | RawDataElement) -> bool:
    """Whether an element is, or may decode to, a sequence (whose items must be walked)."""
    if not isinstance(elem, RawDataElement):
        return elem.VR == "SQ"
    if elem.value is None:
        return True  # not read yet: decode it to find out
    vr = elem.VR
    if vr is None:  # implicit VR: the dictionary says what it is
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            return True
    # UN is decoded as the dictionary VR on conversion, which may be SQ.
    return vr in ("SQ", "UN") or "SQ" in vr


def _value(ds: Dataset, keyword: str) -> Any:
    """An attribute's value (None if absent), decoded without replacing the element read.

    Reading through ``ds.<keyword>`` would store the decoded element, which then could no
    longer be copied through as its original bytes.
    """
    elem = ds.get_item(cast(int, tag_for_keyword(keyword)))
    if elem is None:
        return None
    if isinstance(elem, RawDataElement):
        elem = convert_raw_data_element(elem, encoding=ds.original_character_set, ds=ds)
    return elem.value


def _encoded(elem: DataElement, implicit: bool, little: bool) -> RawDataElement:
    """``elem`` encoded once, as a raw element that the writer copies through."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    holder = Dataset()
    holder.add(elem)
    _write_dataset(fp, holder, default_encoding)
    header = 8 if implicit or elem.VR not in _LONG_VRS else 12
    value = fp.getvalue()[header:]
    return RawDataElement(BaseTag(elem.tag), elem.VR, len(value), value, 0, implicit, little)


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _pad(value: bytes, padding: bytes) -> bytes:
    return value + padding if len(value) % 2 else value


def _map_uids(value: bytes, fn: Callable[[str], str]) -> bytes:
    """Pseudonymise each UID of an encoded UI value (decoded as pydicom does)."""
    items = value.decode(default_encoding).rstrip(" \x00").split("\\")
    if items == [""]:
        return b""
    return _pad("\\".join(fn(v) for v in items).encode(default_encoding), b"\x00")


def _header(tag: int, vr: str | None, length: int, implicit: bool, little: bool) -> bytes:
    e = "<" if little else ">"
    if implicit:
        return struct.pack(e + "HHI", tag >> 16, tag & 0xFFFF, length)
    assert vr is not None
    if vr in _LONG_VRS:
        return struct.pack(e + "HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _write_dataset(fp: DicomBytesIO, ds: Dataset, parent_encoding: Any) -> None:
    """Write ``ds`` in ``fp``'s encoding: raw elements as read, decoded ones via pydicom."""
    implicit, little = fp.is_implicit_VR, fp.is_little_endian
    # Raw bytes are only valid where they were read in the same encoding and character set
    # (the condition pydicom's own writer uses); otherwise every element is re-encoded.
    raw_ok = (ds.original_encoding == (implicit, little)
              and ds.original_character_set == ds._character_set)
    charset = _value(ds, "SpecificCharacterSet")
    encodings = parent_encoding if charset is None else charset
    for tag in sorted(ds.keys()):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are never written (PS3.5 7.2)
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            value = elem.value
            if raw_ok and isinstance(value, bytes) and (elem.VR is not None or implicit):
                if elem.length == _UNDEFINED:  # encapsulated pixel data: fragments as read
                    fp.write(_header(tag, elem.VR, _UNDEFINED, implicit, little))
                    fp.write(value)
                    fp.write(_header(_SEQ_END, None, 0, True, little))
                else:
                    fp.write(_header(tag, elem.VR, len(value), implicit, little))
                    fp.write(value)
                continue
            elem = ds[tag]
        if elem.VR == "SQ":
            # Defined lengths: a reader can skip a sequence without parsing its items.
            seq = DicomBytesIO()
            seq.is_little_endian, seq.is_implicit_VR = little, implicit
            for item in elem.value or []:
                body = DicomBytesIO()
                body.is_little_endian, body.is_implicit_VR = little, implicit
                _write_dataset(body, item, encodings)
                encoded = body.getvalue()
                seq.write(_header(_ITEM, None, len(encoded), True, little))
                seq.write(encoded)
            encoded = seq.getvalue()
            fp.write(_header(tag, "SQ", len(encoded), implicit, little))
            fp.write(encoded)
            continue
        write_data_element(fp, elem, encodings)


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """File meta information (group 0002, explicit VR little endian) with its group length."""

    def uid(value: str) -> bytes:
        raw = value.encode("ascii")
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
    body = b"".join(_header(tag, vr, len(v), False, True) + v for tag, vr, v in elements)
    return _header(0x00020000, "UL", 4, False, True) + struct.pack("<I", len(body)) + body
