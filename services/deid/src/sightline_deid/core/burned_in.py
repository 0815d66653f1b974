"""Burned-in annotation policy: pass an image, blank regions of its pixels, or refuse it.

Text burned into pixels (names, dates on ultrasound banners, secondary captures of screens)
survives any attribute-level action, so an image that may carry it needs a recipe rule that
clears it; otherwise it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID
from sightline_common.errors import UnprocessableInput

from sightline_deid.core.decoding import INPUT_ERRORS, int_value, value
from sightline_deid.core.recipe import BurnedInRule, Recipe

#: What pixel decoders raise on data they cannot decode (pylibjpeg and friends use RuntimeError).
DECODER_ERRORS: tuple[type[Exception], ...] = (*INPUT_ERRORS, RuntimeError)


@dataclass(frozen=True)
class Decision:
    """What the policy decided: ``label`` for the summary, ``blank`` the rule to apply, if any."""

    label: str
    blank: BurnedInRule | None = None


def decide(recipe: Recipe, ds: Dataset) -> Decision:
    """Apply the recipe's burned-in annotation policy to ``ds``; refuse when no rule clears it."""
    policy = recipe.burned_in
    sop = str(value(ds, "SOPClassUID"))
    modality = str(value(ds, "Modality") or "")
    bia_value = value(ds, "BurnedInAnnotation")
    bia = str(bia_value).strip().upper() if bia_value not in (None, "") else None
    risky = bia == "YES" or sop in policy.risky_sop_classes or modality in policy.risky_modalities
    if not risky:
        return Decision("not-applicable")
    for rule in policy.rules:
        if rule.sop_classes and sop not in rule.sop_classes:
            continue
        if rule.modalities and modality not in rule.modalities:
            continue
        if rule.burned_in_annotation is not None and bia != rule.burned_in_annotation:
            continue
        if rule.action == "pass":
            return Decision(f"passed:{rule.name}")
        if rule.action == "blank" and "PixelData" in ds:
            return Decision(f"blanked:{rule.name}", rule)
        break
    if policy.default == "pass":
        return Decision("passed:default")
    raise UnprocessableInput(
        "the image may carry burned-in annotation and the recipe has no rule that clears it",
        reason="burned-in-annotation", recipe=recipe.label)


def blank(ds: Dataset, rule: BurnedInRule) -> None:
    """Overwrite the rule's pixel regions with zeros (decompressing first if needed)."""
    bits = int_value(ds, "BitsAllocated")
    if bits % 8:
        raise UnprocessableInput("cannot blank regions of 1-bit pixel data",
                                 reason="burned-in-annotation")
    try:
        if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            # A fresh random SOP Instance UID here would make the pseudonym differ on every run.
            ds.decompress(generate_instance_uid=False)
        arr = np.array(ds.pixel_array, copy=True)
    except DECODER_ERRORS as exc:
        raise UnprocessableInput(f"pixel data could not be decoded ({type(exc).__name__})",
                                 reason="malformed", attribute="PixelData") from None
    frames = int_value(ds, "NumberOfFrames", default=1)
    view = arr if frames > 1 else arr[np.newaxis, ...]
    rows, cols = int_value(ds, "Rows"), int_value(ds, "Columns")
    for region in rule.regions:
        y1 = rows if region.height is None else min(rows, region.y + region.height)
        x1 = cols if region.width is None else min(cols, region.x + region.width)
        view[:, region.y:y1, region.x:x1, ...] = 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.BurnedInAnnotation = "NO"
