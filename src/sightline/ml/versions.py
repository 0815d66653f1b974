"""A newly trained version joins the model's repository folder beside the versions it keeps.

``sightline add-version``: the export of a training run (``<source>/<name>/``) becomes version
N+1 of ``<repository>/<name>/`` and the one the model's ``manifest.json`` names. The version it
follows keeps its own manifest (``<N>/manifest.json``) and its evaluation report
(``evaluation/<N>/``), which is what the gateway, explain and preprocess read for a version kept
beside a newer one (docs/lifecycle.md). Nothing is promoted here: which version a tenant is
served stays the gateway's lifecycle decision.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sightline_common.errors import InvalidInput
from sightline_common.imaging import channels
from sightline_common.manifest import ModelManifest, load_manifest, verify_artifact

from sightline.ml.export import artifact_digests, write_manifest, write_serving_files

#: What a version brings: its weights and graph (the python-backend file is written afresh).
VERSION_FILES = ("model.pt", "model.onnx")


def _versions(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def add_version(repository: Path, name: str, source: Path) -> ModelManifest:
    """Add the model exported at ``source/<name>`` as the next version of ``repository/<name>``.

    Refused (invalid input) when the new version's input differs from the served configuration:
    one Triton configuration serves every version of a model.
    """
    current = load_manifest(repository, name)
    incoming = load_manifest(source, name)
    old, new = current.preprocessing, incoming.preprocessing
    if (old.height, old.width, channels(old)) != (new.height, new.width, channels(new)):
        raise InvalidInput(
            f"{name}: the new version's input {channels(new)}x{new.height}x{new.width} differs from "
            f"the served {channels(old)}x{old.height}x{old.width}; train it as a new model instead"
        )
    root = repository / name
    version = max(_versions(root)) + 1
    sources = {f: verify_artifact(source, incoming, f"{incoming.version}/{f}") for f in VERSION_FILES}

    # The version it follows keeps what describes it.
    write_manifest(root / str(current.version) / "manifest.json", current)
    evaluation = root / "evaluation"
    if (evaluation / "evaluation.json").is_file():
        kept = evaluation / str(current.version)
        kept.mkdir(parents=True, exist_ok=True)
        for item in evaluation.iterdir():
            if item.is_file():
                shutil.move(str(item), kept / item.name)

    vdir = root / str(version)
    vdir.mkdir()
    for filename, path in sources.items():
        shutil.copyfile(path, vdir / filename)
    has_score = current.out_of_scope is not None
    write_serving_files(root, name, version, new.height, new.width, channels(new), out_of_scope=has_score)
    fields = incoming.model_dump(mode="json")
    # Fitted by `sightline fit-out-of-scope` for this version; metrics by `sightline evaluate`.
    fields.update(version=version, out_of_scope=None, artifacts=artifact_digests(root))
    fields["metrics"] = {"validation": incoming.metrics.get("validation", {})}
    manifest = ModelManifest.model_validate(fields)
    write_manifest(root / "manifest.json", manifest)
    return manifest
