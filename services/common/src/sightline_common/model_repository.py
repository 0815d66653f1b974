"""The models of a model repository: every folder with a ``manifest.json``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sightline_common.errors import NotFound


def repository_models(repository: Path) -> list[str]:
    """Names of the models with a manifest in ``repository``, sorted."""
    return sorted(p.parent.name for p in repository.glob("*/manifest.json"))


def served_models(repository: Path, names: Sequence[str]) -> list[str]:
    """The models a service serves: ``names`` (each must have a manifest), or, when empty, every
    model of the repository (at least one)."""
    present = repository_models(repository)
    if not names:
        if not present:
            raise NotFound(f"no model with a manifest in the model repository {repository}")
        return present
    missing = [n for n in names if n not in present]
    if missing:
        raise NotFound(f"model(s) {', '.join(missing)} have no manifest in the model repository")
    return list(dict.fromkeys(names))
