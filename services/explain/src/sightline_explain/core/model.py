"""Loading the served checkpoint, refusing one that does not match its manifest."""

from __future__ import annotations

from pathlib import Path

from sightline_common.errors import NotFound
from sightline_common.manifest import ModelManifest, load_manifest, own_version_manifest, verify_artifact
from torch import nn

from sightline_explain.core.nets import load_checkpoint


def load_served_model(repository: Path, name: str) -> tuple[ModelManifest, nn.Module]:
    """The manifest and the eval-mode network of ``model.pt`` (sha256 checked, else IntegrityError)."""
    manifest = load_manifest(repository, name)
    path = verify_artifact(repository, manifest, f"{manifest.version}/model.pt")
    model = load_checkpoint(str(path), manifest.architecture)
    for p in model.parameters():
        p.requires_grad_(False)
    return manifest, model


def version_manifest(repository: Path, name: str, version: int) -> ModelManifest:
    """The manifest of one version: ``<name>/<version>/manifest.json`` (a version kept beside a
    newer one keeps its own), else the model's when it names that version; NotFound otherwise."""
    manifest = own_version_manifest(repository, name, version) or load_manifest(repository, name)
    if manifest.name != name or manifest.version != version:
        raise NotFound(f"model {name} has no manifest of version {version}")
    return manifest


def load_model_version(repository: Path, name: str, version: int) -> tuple[ModelManifest, nn.Module]:
    """Like :func:`load_served_model` for a named version: its ``model.pt`` checked against that
    version's own manifest entry (``<version>/model.pt``)."""
    manifest = version_manifest(repository, name, version)
    path = verify_artifact(repository, manifest, f"{version}/model.pt")
    model = load_checkpoint(str(path), manifest.architecture)
    for p in model.parameters():
        p.requires_grad_(False)
    return manifest, model
