"""The recipe's PS3.15 Annex E actions, applied to a data set and the items of its sequences.

Each action is decided once, by :func:`plan`, as an :class:`Op`, and each op has one
implementation on values (:func:`pseudonymise`, :func:`shift_dates`, :func:`scrub`, the dummy
table). Two adapters feed it: :func:`_apply_encoded` works on the raw bytes as read, for ops
that need no character-set decoding (most of a file: it saves decoding and re-encoding), and
:func:`_apply_decoded` on pydicom's decoded element for the rest (free text, sequences, unknown
or ambiguous VRs). The adapters only convert between bytes and values; a test holds their
output byte-identical.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from sightline_common.errors import UnprocessableInput

from sightline_deid.core.decoding import element, encode_text, raw_value, value, value_of
from sightline_deid.core.descriptors import DescriptorPolicy, clean
from sightline_deid.core.guards import Limits
from sightline_deid.core.private import remove_private
from sightline_deid.core.pseudonym import Pseudonymizer, patient_identity
from sightline_deid.core.recipe import Recipe, Rule
from sightline_deid.core.temporal import DATE_TIME_PAIRS, Shift, shift_value

STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
                        "UC", "UI", "UR", "UT"})
#: Free-text VRs that the clean action keeps whole or replaces (see :mod:`.descriptors`).
TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "CS", "PN"})
DUMMY: dict[str, str] = {
    "PN": "ANONYMOUS", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "CS": "ANONYMIZED", "LT": "ANONYMIZED",
    "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "AE": "ANONYMIZED", "UR": "",
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "IS": "0", "DS": "0", "AS": "000Y",
}
BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV"})
#: Text VRs that the raw adapter decodes in the data set's character set (PN, whose decoded form
#: is a PersonName, and CS are left to the decoded adapter).
_CHARSET_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC"})
_TIMEZONE_OFFSET = 0x00080201  # TimezoneOffsetFromUTC (SH): local times move, their zone does not
_PATIENT_ID = 0x00100020


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
    #: Whether the output was generalised (re-identification risk: its class was below k).
    generalised: bool = False
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
            "generalised": self.generalised,
        }


class Context:
    """State of one de-identification: pseudonymizer, date shift, counters, element budget."""

    def __init__(self, recipe: Recipe, pseudo: Pseudonymizer, limits: Limits) -> None:
        self.recipe = recipe
        self.pseudo = pseudo
        self.limits = limits
        self.summary = Summary(recipe.name, recipe.version)
        #: The patient's date/time offset; None when dates are not kept.
        self.shift: Shift | None = None
        self.elements = 0
        #: IssuerOfPatientID of the data set being walked: with its PatientID, the patient identity.
        self.issuer = ""
        #: Original times of day of the data set being walked, by the tag of the date they complete.
        self.times: dict[int, str] = {}
        #: The character set (Python codecs) the data set being walked was read in.
        self.encodings: Any = None

    @property
    def keeps_dates(self) -> bool:
        """Whether dates are shifted (Retain Longitudinal Temporal Information, Modified Dates)."""
        return bool(self.recipe.options.get("retain_longitudinal_modified_dates"))

    def count(self, action: str) -> None:
        self.summary.actions[action] += 1


def date_shift(ds: Dataset, ctx: Context) -> Shift | None:
    """The patient's (else the study's) keyed date/time offset, or None when dates are not kept."""
    if not ctx.keeps_dates:
        return None
    patient_id = str(value(ds, "PatientID") or "").strip()
    if patient_id:
        key = patient_identity(str(value(ds, "IssuerOfPatientID") or ""), patient_id)
    else:
        key = "study:" + str(value(ds, "StudyInstanceUID"))
    ctx.summary.date_shifted = True
    lo, hi = ctx.recipe.date_shift_days
    return Shift(ctx.pseudo.date_offset_seconds(key, lo, hi), ctx.recipe.time_mode)


# ---------------------------------------------------------------------- the walk
def walk(ds: Dataset, ctx: Context, depth: int = 0) -> None:
    """Apply the recipe to every attribute of ``ds`` (recursing into kept sequences)."""
    if depth > ctx.limits.max_sequence_depth:
        raise UnprocessableInput("sequences nested too deeply", reason="too-complex")
    tags = list(ds.keys())
    ctx.elements += len(tags)
    if ctx.elements > ctx.limits.max_elements:
        raise UnprocessableInput("too many data elements", reason="too-complex")
    outer = ctx.issuer, ctx.times, ctx.encodings
    # Read before the walk changes them: the PatientID pseudonym of this data set is keyed on its
    # issuer, and a date that its time carries past midnight needs the original time.
    ctx.issuer = str(value(ds, "IssuerOfPatientID") or "") if _PATIENT_ID in ds else ""
    ctx.times = {}
    # As pydicom decodes an element of this data set (Dataset.__getitem__).
    ctx.encodings = ds.original_character_set or ds._character_set
    if ctx.shift is not None and ctx.shift.time_of_day:
        for tag in tags:
            partner = DATE_TIME_PAIRS.get(int(tag))
            if partner is not None and partner in ds:
                time = value_of(ds, partner)
                ctx.times[int(tag)] = time if isinstance(time, str) else ""
    try:
        _walk_elements(ds, tags, ctx, depth)
    finally:
        ctx.issuer, ctx.times, ctx.encodings = outer


def _walk_elements(ds: Dataset, tags: list[BaseTag], ctx: Context, depth: int) -> None:
    has_private = False
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
        rule = ctx.recipe.action_for(t)
        if rule is None:
            del ds[tag]
            ctx.count("X")
            ctx.summary.uncovered_removed += 1
            continue
        _apply(ds, tag, rule, ctx, depth)
    if has_private:
        remove_private(ds, ctx)


def _apply(ds: Dataset, tag: BaseTag, rule: Rule, ctx: Context, depth: int) -> None:
    action = rule.action
    ctx.count(action)
    if action == "X":
        del ds[tag]
        return
    raw = ds.get_item(tag)
    if action == "K" and not _may_hold_items(raw):
        return  # kept as read: never decoded, its bytes are written back unchanged
    if isinstance(raw, RawDataElement):
        encoded = _apply_encoded(raw, action, ctx)
        if encoded is not None:
            ds[tag] = encoded
            return
    elem = element(ds, tag)
    if elem.VR == "SQ":
        if action == "D" and rule.basic == "X/D":
            # X/D allows removal; D is for a Type 1 sequence, where an empty one would not
            # conform either, and an empty Type 3 sequence is invalid: remove it.
            del ds[tag]
            return
        if action in ("Z", "D"):
            # A dummy sequence is an empty one: items of identity sequences (person or
            # operator identification) hold codes that identify, so none is kept.
            elem.value = Sequence([])
        else:  # K, C, U, U*, H on a sequence: keep it, de-identify its items.
            for item in elem.value:
                walk(item, ctx, depth + 1)
        return
    if action != "K":
        _apply_decoded(elem, action, ctx)


# ---------------------------------------------------------------------- one implementation per op
class Op(enum.Enum):
    """What an action does to a value of a given VR."""

    KEEP = "keep"
    EMPTY = "empty"
    DUMMY = "dummy"
    ZEROS = "zeros"
    UID = "uid"
    IDENTIFIER = "identifier"
    PATIENT = "patient"
    SHIFT_DATES = "shift-dates"  # DA, DT and TM: moved by the patient's offset
    SCRUB = "scrub"


def plan(action: str, vr: str, tag: int) -> Op:
    """The op for ``action`` (Z, D, U, U*, H, C) on a non-sequence value of ``vr``."""
    if action == "Z":
        return Op.EMPTY
    if action in ("U", "U*"):
        return Op.UID
    if action == "H":
        return Op.PATIENT if tag == _PATIENT_ID else Op.IDENTIFIER
    if action == "D":
        if vr == "UI":
            return Op.UID
        if vr in DUMMY:
            return Op.DUMMY
        if vr in BYTES_VRS or vr == "UN":
            return Op.ZEROS  # same length, no information
        return Op.EMPTY
    if action == "C":
        if vr in ("DA", "DT", "TM"):
            return Op.SHIFT_DATES
        if vr == "SH" and tag == _TIMEZONE_OFFSET:
            return Op.KEEP
        if vr in TEXT_VRS:
            return Op.SCRUB
        return Op.EMPTY
    raise ValueError(f"unknown action {action!r}")  # the recipe loader admits no other


def pseudonymise(values: list[str], fn: Callable[[str], str]) -> list[str]:
    return [fn(v) for v in values]


def _pseudonym(op: Op, ctx: Context) -> Callable[[str], str]:
    """The pseudonym function of a UID, IDENTIFIER or PATIENT op."""
    if op is Op.PATIENT:
        return lambda v: ctx.pseudo.patient(ctx.issuer, v)
    return ctx.pseudo.uid if op is Op.UID else ctx.pseudo.identifier


def shift_dates(values: list[str], vr: str, tag: int, ctx: Context) -> list[str]:
    """Each DA, DT or TM value moved by the patient's offset; all emptied if dates are not kept or
    one does not parse."""
    if ctx.shift is None:
        return []
    partner = ctx.times.get(tag) if len(values) == 1 else None
    shifted = [shift_value(v, vr, ctx.shift, partner) for v in values if v != ""]
    if any(s is None for s in shifted):
        return []  # unparseable values are emptied, never passed through
    return [s for s in shifted if s is not None]


def scrub(text: str, vr: str, policy: DescriptorPolicy) -> str:
    """A free-text value kept whole when :func:`.descriptors.clean` allows it, else a dummy."""
    kept = clean(text, policy)
    return DUMMY.get(vr, "") if kept is None else kept


# ---------------------------------------------------------------------- the two representations
def _apply_decoded(elem: DataElement, action: str, ctx: Context) -> None:
    """Apply ``action`` to a decoded element's value."""
    vr = elem.VR
    op = plan(action, vr, int(elem.tag))
    if op is Op.KEEP:
        return
    if op is Op.EMPTY:
        elem.value = "" if vr in STRING_VRS else None
    elif op is Op.DUMMY:
        elem.value = DUMMY[vr]
    elif op is Op.ZEROS:
        elem.value = b"\x00" * len(elem.value) if isinstance(elem.value, bytes) else None
    elif op in (Op.UID, Op.IDENTIFIER, Op.PATIENT):
        if elem.value not in (None, ""):
            elem.value = _from_values(pseudonymise(_values(elem.value), _pseudonym(op, ctx)))
    elif op is Op.SHIFT_DATES:
        elem.value = _from_values(shift_dates(_values(elem.value), vr, int(elem.tag), ctx))
    elif op is Op.SCRUB:
        v = elem.value
        if not isinstance(v, str | MultiValue | list):
            elem.value = ""  # e.g. a single person name: nothing of it is kept
        else:
            elem.value = scrub("\\".join(map(str, v)) if not isinstance(v, str) else v, vr,
                               ctx.recipe.descriptors)


def _values(v: Any) -> list[str]:
    if v in (None, ""):
        return []
    return [str(x) for x in v] if isinstance(v, MultiValue | list) else [str(v)]


def _from_values(values: list[str]) -> Any:
    return values if len(values) > 1 else (values[0] if values else "")


def _apply_encoded(raw: RawDataElement, action: str, ctx: Context) -> RawDataElement | None:
    """Apply ``action`` to the encoded value where no character-set decoding is needed.

    Returns None where the decoded path must do it (free text, sequences, unknown, UN or
    ambiguous VRs, and UIDs in VRs other than UI).
    """
    encoded = raw.value
    vr = raw.VR or _dictionary_vr(raw.tag)
    if encoded is None or vr is None or vr in ("SQ", "UN") or " " in vr:
        return None
    op = plan(action, vr, int(raw.tag))
    new: bytes
    if op is Op.KEEP:
        return raw
    if op is Op.EMPTY:
        new = b""
    elif op is Op.DUMMY:
        new = _pad(DUMMY[vr].encode("ascii"), b" ")
    elif op is Op.ZEROS:
        new = b"\x00" * (len(encoded) + len(encoded) % 2)
    elif op is Op.UID and vr == "UI":
        items = _decode_ascii(encoded)
        new = b"" if items == [""] else _encode_ascii(pseudonymise(items, _pseudonym(op, ctx)), b"\x00")
    elif op is Op.SHIFT_DATES:
        new = _encode_ascii(shift_dates(_decode_ascii(encoded), vr, int(raw.tag), ctx), b" ")
    elif op in (Op.IDENTIFIER, Op.PATIENT) and vr in _CHARSET_VRS:
        values = _values(raw_value(raw, vr, ctx.encodings))
        # Pseudonyms are ASCII: encoded as such whatever the character set.
        new = _encode_ascii(pseudonymise(values, _pseudonym(op, ctx)), b" ") if values else b""
    elif op is Op.SCRUB and vr in _CHARSET_VRS:
        decoded = raw_value(raw, vr, ctx.encodings)
        text = decoded if isinstance(decoded, str) else "\\".join(map(str, decoded))
        new = _pad(encode_text(scrub(text, vr, ctx.recipe.descriptors), ctx.encodings, int(raw.tag)), b" ")
    else:
        return None
    return RawDataElement(raw.tag, raw.VR, len(new), new, raw.value_tell,
                          raw.is_implicit_VR, raw.is_little_endian)


def _decode_ascii(encoded: bytes) -> list[str]:
    """Values of a VR of the default repertoire, decoded as pydicom does."""
    return encoded.decode(default_encoding).rstrip(" \x00").split("\\")


def _encode_ascii(values: list[str], padding: bytes) -> bytes:
    return _pad("\\".join(values).encode(default_encoding), padding)


def _pad(encoded: bytes, padding: bytes) -> bytes:
    return encoded + padding if len(encoded) % 2 else encoded


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _may_hold_items(elem: DataElement | RawDataElement) -> bool:
    """Whether an element is, or may decode to, a sequence (whose items must be walked)."""
    if not isinstance(elem, RawDataElement):
        return elem.VR == "SQ"
    if elem.value is None:
        return True  # not read yet: decode it to find out
    vr = elem.VR or _dictionary_vr(elem.tag)
    if vr is None:
        return True
    # UN is decoded as the dictionary VR on conversion, which may be SQ.
    return vr in ("SQ", "UN") or "SQ" in vr
