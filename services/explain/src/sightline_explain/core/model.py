"""Loading the served checkpoint, refusing one that does not match its manifest."""

from __future__ import annotations

from pathlib import Path

from sightline_common.manifest import ModelManifest, load_manifest, verify_artifact
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
