"""Which sites leave-one-site-out covers, and its results as read back from an evaluation.

Kept apart from :mod:`sightline.ml.loso` so the report and model card read results without
importing the inference stack.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: A site enters leave-one-site-out with at least this many malignant images (all splits).
LOSO_MIN_POSITIVES = 50


def loso_sites(meta: pd.DataFrame, min_positives: int = LOSO_MIN_POSITIVES) -> list[str]:
    """Sites with at least ``min_positives`` malignant images in the folder, most first."""
    positives = meta[meta["site"] != "unknown"].groupby("site")["label"].sum()
    eligible = positives[positives >= min_positives].sort_values(ascending=False, kind="stable")
    return [str(s) for s in eligible.index]


def loso_entries(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-site results of an evaluation, also from the older single-site ``external_validation``."""
    section = result.get("leave_one_site_out")
    if section:
        return list(section["results"])
    ext = result.get("external_validation")
    return [ext] if ext else []
