"""Where a study's objects live in the object store, and removing them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sightline_common.storage import ObjectStore


def study_prefix(study_id: str) -> str:
    return f"studies/{study_id}/"


def instance_key(study_id: str, n: int) -> str:
    """The de-identified instance ``n`` of a study."""
    return f"{study_prefix(study_id)}instances/{n}.dcm"


def explain_prefix(study_id: str, model: str | None = None) -> str:
    """Where the explain service writes a study's heatmap and overlay.

    ``model``: a model after the study's first (each model's heatmap is its own); the first
    model's stay where a single-model study's always were.
    """
    return f"{study_prefix(study_id)}explain/" + (f"{model}/" if model else "")


async def delete_objects(store: ObjectStore, keys: Iterable[str]) -> None:
    for key in keys:
        await asyncio.to_thread(store.delete, key)
