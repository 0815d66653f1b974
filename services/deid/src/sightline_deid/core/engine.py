"""De-identify one DICOM Part 10 file with a recipe: parse, check, transform, write, re-check.

Pure logic with no web framework: the API layer hands in bytes and a tenant and gets bytes and
a summary back. A file the service cannot de-identify is refused with a typed
:mod:`sightline_common.errors` 4xx whose message names an attribute keyword or a limit, never a
value from the file. Only the parser, the value decoder, the pixel decoder and the character-set
encoder map their exceptions to 4xx (see :mod:`.decoding`); any other exception is a bug and
propagates (the web layer answers 500 with no PHI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID
from sightline_common.errors import InvalidInput, UnprocessableInput

from sightline_deid.core import burned_in, guards, quasi, readback, writer
from sightline_deid.core.actions import Context, Summary, date_shift, walk
from sightline_deid.core.decoding import quiet_pydicom
from sightline_deid.core.guards import Limits
from sightline_deid.core.ocr import TextDetector
from sightline_deid.core.pseudonym import Pseudonymizer
from sightline_deid.core.quasi import ClassKeys
from sightline_deid.core.recipe import Recipe

__all__ = ["Deidentifier", "Limits", "Result", "Summary"]

_SOP_CLASS, _SOP_INSTANCE, _IDENTITY_REMOVED = 0x00080016, 0x00080018, 0x00120062
_TEMPORAL_MODIFIED = 0x00280303  # LongitudinalTemporalInformationModified
_Marks = tuple[list[RawDataElement], dict[str, RawDataElement]]


@dataclass(frozen=True)
class Result:
    """The de-identified file, the summary of what was done and the file's quasi-identifier class
    keys (keyed hashes, never the values: see :mod:`.quasi`)."""

    data: bytes
    summary: Summary
    classes: ClassKeys | None = None


class Deidentifier:
    """Applies one recipe; holds no per-request state, so one instance serves all threads."""

    def __init__(self, recipe: Recipe, secret: bytes, limits: Limits | None = None,
                 detector: TextDetector | None = None) -> None:
        self.recipe = recipe
        self._secret = secret
        self.limits = limits or Limits()
        #: Reads burned-in text for the recipe's ``ocr`` rules (Tesseract unless one is given).
        self.detector = detector or burned_in.detector_for(recipe.burned_in.ocr)
        self._pseudonymizers: dict[str, Pseudonymizer] = {}
        self._marks: dict[tuple[bool, bool, bool, bool], _Marks] = {}
        quiet_pydicom()

    def _pseudonymizer(self, tenant: str) -> Pseudonymizer:
        """The tenant's pseudonymizer, its derived key computed once per tenant."""
        pseudo = self._pseudonymizers.get(tenant)
        if pseudo is None:
            if len(self._pseudonymizers) >= 4096:  # bound memory under many distinct tenants
                self._pseudonymizers.clear()
            pseudo = self._pseudonymizers[tenant] = Pseudonymizer(self._secret, tenant)
        return pseudo

    def context(self, tenant: str, recipe: Recipe | None = None) -> Context:
        """A fresh per-file context for ``tenant`` (under ``recipe``, by default the engine's)."""
        return Context(recipe or self.recipe, self._pseudonymizer(tenant), self.limits)

    def deidentify(self, data: bytes, tenant: str, *, generalise: bool = False) -> Result:
        """De-identify a DICOM Part 10 file for ``tenant`` (raises typed 4xx errors).

        ``generalise``: the generalised output of a study whose quasi-identifier class is below k
        (the recipe's device-free variant, the age in 5-year bands; see :mod:`.quasi`); refused
        unless the recipe allows it (``reidentification_risk.generalise_below_k``).
        """
        start = time.perf_counter()
        recipe = self.recipe
        if generalise:
            if self.recipe.generalised is None:
                raise InvalidInput("this recipe does not generalise outputs", reason="generalise-off")
            recipe = self.recipe.generalised
        guards.check_size(data, self.limits)
        ds = guards.parse(data, self.limits)
        ctx = self.context(tenant, recipe)
        ctx.summary.generalised = generalise
        guards.check_required(ds)
        guards.check_pixels(ds, self.limits)
        decision = burned_in.decide(self.recipe, ds)
        ctx.summary.burned_in = decision.label
        ctx.shift = date_shift(ds, ctx)
        if decision.ocr is not None:
            cleaned = burned_in.clean(ds, decision, self.recipe.burned_in.ocr, self.detector)
            ctx.summary.burned_in = cleaned.label(decision.ocr.name)
        walk(ds, ctx)
        if generalise:
            quasi.generalise(ds)
        classes = quasi.class_keys(ctx.pseudo, quasi.quasi_identifiers(ds))
        self._mark(ds, ctx, pixels_cleaned=decision.ocr is not None)
        out = writer.write(ds)
        _verify(out)
        ctx.summary.seconds = time.perf_counter() - start
        return Result(out, ctx.summary, classes)

    def _mark(self, ds: Dataset, ctx: Context, *, pixels_cleaned: bool) -> None:
        """Set PatientIdentityRemoved and the De-identification Method (Code Sequence)."""
        ts = UID(ds.file_meta.TransferSyntaxUID)
        generalised = ctx.summary.generalised
        key = (generalised, pixels_cleaned, ts.is_implicit_VR, ts.is_little_endian)
        marks = self._marks.get(key)
        if marks is None:
            # The same for every file of one recipe and encoding: encoded once, as raw elements.
            marks = self._marks[key] = self._encode_marks(ctx.recipe, pixels_cleaned, ts, generalised)
        common, temporal = marks
        for raw in common:
            ds[raw.tag] = raw
        if ctx.shift is not None:
            ds[_TEMPORAL_MODIFIED] = temporal["MODIFIED"]
        elif self.recipe.options.get("retain_longitudinal_full_dates"):
            ds[_TEMPORAL_MODIFIED] = temporal["UNMODIFIED"]
        else:
            ds[_TEMPORAL_MODIFIED] = temporal["REMOVED"]

    def _encode_marks(self, recipe: Recipe, pixels_cleaned: bool, ts: UID, generalised: bool) -> _Marks:
        mark = Dataset()
        mark.PatientIdentityRemoved = "YES"
        method = f"Sightline {recipe.label} PS3.15 E.1-1" + (" generalised" if generalised else "")
        mark.DeidentificationMethod = method[:64]
        items = []
        for code, meaning in recipe.method_codes(pixels_cleaned=pixels_cleaned):
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        mark.DeidentificationMethodCodeSequence = Sequence(items)
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
        common = [writer.encoded(elem, implicit, little) for elem in mark]
        temporal = {v: writer.encoded(DataElement(_TEMPORAL_MODIFIED, "CS", v), implicit, little)
                    for v in ("MODIFIED", "UNMODIFIED", "REMOVED")}
        return common, temporal


def _verify(out: bytes) -> None:
    """Read the output back: never return a file that does not read back consistently."""
    try:
        meta, found = readback.read_back(out)
    except readback.Unreadable:
        meta, found = {}, {}
    ok = (bool(found.get(_SOP_CLASS)) and bool(found.get(_SOP_INSTANCE))
          and _uid(meta.get(0x00020002)) == _uid(found.get(_SOP_CLASS))
          and _uid(meta.get(0x00020003)) == _uid(found.get(_SOP_INSTANCE))
          and (found.get(_IDENTITY_REMOVED) or b"").rstrip(b" ") == b"YES")
    if not ok:
        raise UnprocessableInput("de-identified output failed its validity check", reason="invalid-output")


def _uid(raw: bytes | None) -> bytes:
    return (raw or b"").rstrip(b"\x00 ")
