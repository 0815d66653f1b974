"""Model manifests, read from the model repository and cached until the file changes."""

from __future__ import annotations

from pathlib import Path

from sightline_common.manifest import ModelManifest, model_dir, own_version_manifest


class ManifestCache:
    """Model manifests parsed once per change of ``manifest.json`` (keyed on its mtime and size)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._cache: dict[str, tuple[tuple[int, int], ModelManifest]] = {}

    def get(self, name: str) -> ModelManifest:
        path = model_dir(self.repository, name) / "manifest.json"
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        manifest = ModelManifest.model_validate_json(path.read_bytes())
        self._cache[name] = (stamp, manifest)
        return manifest

    def version(self, name: str, version: int) -> ModelManifest:
        """The manifest of one version: ``<name>/<version>/manifest.json`` when the repository
        keeps one for it (a version kept beside a newer one), else the model's."""
        return own_version_manifest(self.repository, name, version) or self.get(name)
