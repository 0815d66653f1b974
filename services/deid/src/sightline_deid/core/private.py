"""Private attributes: removed, except the recipe's safe list under Retain Safe Private."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from sightline_deid.core.decoding import element, element_or_none
from sightline_deid.core.recipe import SafePrivate

if TYPE_CHECKING:
    from sightline_deid.core.actions import Context


def remove_private(ds: Dataset, ctx: Context) -> None:
    """Remove private attributes, keeping only the recipe's safe list under its option."""
    recipe = ctx.recipe
    retain = recipe.private_rule.action == "C"
    kept_creators: set[int] = set()
    creators: list[int] = []
    for tag in list(ds.keys()):
        t = int(tag)
        group, elem = t >> 16, t & 0xFFFF
        if not group & 1:
            continue
        if elem < 0x0100:
            creators.append(t)
            continue
        keep = False
        if retain:
            creator_tag = (group << 16) | (elem >> 8)
            creator = element_or_none(ds, creator_tag)
            if creator is not None:
                key = SafePrivate(group, str(creator.value).strip(), elem & 0xFF)
                keep = key in recipe.safe_private and element(ds, t).VR in recipe.private_numeric_vrs
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
