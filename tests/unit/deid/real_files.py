"""The real DICOM files installed with pydicom, pydicom-data and deid-data, and their pinned outcomes.

Files are listed from the installed package folders (nothing is downloaded). Each file's outcome
is pinned in ``data/real_files_outcomes.json``: ``"de-identified"`` or the one refusal reason
allowed for that file. Regenerate it after a deliberate change, and review the diff, with
``.venv/bin/python -m tests.unit.deid.real_files``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom.data
from sightline_common.errors import SightlineError
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import load_recipe

MAX_SIZE = 4 * 1024 * 1024
OUTCOMES_PATH = Path(__file__).parent / "data" / "real_files_outcomes.json"
DEIDENTIFIED = "de-identified"


def installed_files() -> dict[str, Path]:
    """The files by id (``<folder>/<name>``), in a stable order."""
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    for module in ("data_store", "deid_data"):  # pydicom-data installs as `data_store`
        try:
            roots.append(Path(str(__import__(module).__file__)).parent)
        except ImportError:
            continue
    files: dict[str, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            wanted = path.suffix.lower() in ("", ".dcm", ".dicom")
            if wanted and path.is_file() and 0 < path.stat().st_size <= MAX_SIZE:
                name = f"{path.parent.name}/{path.name}"
                if name in files:
                    raise RuntimeError(f"two real files share the id {name}")
                files[name] = path
    return files


def outcome(engine: Deidentifier, data: bytes) -> str:
    """``"de-identified"``, or the reason of the 4xx refusal (anything else propagates)."""
    try:
        engine.deidentify(data, "tenant-a")
    except SightlineError as err:
        if not 400 <= err.status < 500:
            raise
        return str(err.extra["reason"])
    return DEIDENTIFIED


def pinned_outcomes() -> dict[str, str]:
    table: dict[str, str] = json.loads(OUTCOMES_PATH.read_text())
    return table


if __name__ == "__main__":
    from tests.unit.deid.conftest import SECRET

    engine = Deidentifier(load_recipe("sightline-basic"), SECRET)
    table = {name: outcome(engine, path.read_bytes()) for name, path in installed_files().items()}
    OUTCOMES_PATH.parent.mkdir(exist_ok=True)
    OUTCOMES_PATH.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
