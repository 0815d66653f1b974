"""The model card's "Versions and how each was trained": every version the repository keeps of
a model (its own ``<version>/manifest.json``) and the provenance or central recipe each records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sightline_common.manifest import ModelManifest, own_version_manifest


def how_trained(manifest: ModelManifest) -> str:
    """One line on how a version was trained: its provenance (a federated run says so), else the
    central recipe its manifest records."""
    td = manifest.training_data or {}
    if td.get("provenance"):
        return str(td["provenance"])
    cfg = td.get("config") or {}
    arch = (cfg.get("architecture") or {}).get("name", "?")
    history = td.get("history") or []
    epochs = f"{cfg.get('epochs', '?')} epochs"
    if history and len(history) != cfg.get("epochs"):
        budget = f"{cfg.get('max_minutes', '?')}-minute budget"
        epochs = f"{len(history)} epochs (of {cfg.get('epochs', '?')}: the {budget})"
    extras = []
    if ((cfg.get("architecture") or {}).get("kwargs") or {}).get("colour_constancy") is not None:
        extras.append("Shades of Gray colour constancy in the graph")
    if cfg.get("sampling", "uniform") != "uniform":
        extras.append(f"{cfg['sampling'].replace('_', '-')} drawing")
    return (
        f"centralised: {arch}{''.join(', ' + e for e in extras)}, {epochs} at "
        f"{cfg.get('input_size', '?')} px on "
        f"`{', '.join(td.get('train_splits', []))}` ({td.get('n_train', '?')} images), "
        f"seed {cfg.get('seed', '?')}"
    )


def versions_section(manifest: ModelManifest, versions: Sequence[ModelManifest] = ()) -> list[str]:
    """Every version the repository keeps of the model, newest first, and how each was trained."""
    found = {m.version: m for m in [*versions, manifest]}
    rows = [
        f"| {v}{' (this card)' if v == manifest.version else ''} | {how_trained(m)} | "
        f"`{m.artifacts.get(f'{v}/model.onnx', '?')[:12]}` |"
        for v, m in sorted(found.items(), reverse=True)
    ]
    return [
        "## Versions and how each was trained",
        "",
        "| version | how it was trained | model.onnx sha256 |",
        "|---|---|---|",
        *rows,
        "",
    ]


def repository_versions(repository: Path, name: str) -> list[ModelManifest]:
    """The manifests versions kept beside a newer one have of their own (``<name>/<v>/manifest.json``)."""
    found = []
    for folder in sorted((repository / name).iterdir()):
        if folder.is_dir() and folder.name.isdigit():
            own = own_version_manifest(repository, name, int(folder.name))
            if own is not None:
                found.append(own)
    return found
