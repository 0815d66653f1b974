"""Real files from pydicom's test data, pydicom-data and deid-data, read only from disk.

Each file is either de-identified (output re-parses, identity removed, original patient name and
id gone from the bytes) or refused with a 4xx reason; nothing else. No download is attempted:
the files are listed from the installed package folders.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from sightline_common.errors import SightlineError
from sightline_deid.core.engine import Deidentifier

MAX_SIZE = 4 * 1024 * 1024


def _installed_files() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    for module in ("data_store", "deid_data"):  # pydicom-data installs as `data_store`
        try:
            roots.append(Path(__import__(module).__file__).parent)
        except ImportError:
            continue
    files = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            wanted = path.suffix.lower() in ("", ".dcm", ".dicom")
            if wanted and path.is_file() and 0 < path.stat().st_size <= MAX_SIZE:
                files.append(path)
    return files


FILES = _installed_files()


def _identity(data: bytes) -> list[bytes]:
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        values = [str(ds.get("PatientName") or ""), str(ds.get("PatientID") or "")]
    except Exception:
        return []
    return [v.encode() for v in values if len(v.strip()) >= 6]


def test_real_files_are_present() -> None:
    assert len(FILES) > 100


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_real_file_deidentified_or_refused(path: Path, engine: Deidentifier) -> None:
    data = path.read_bytes()
    try:
        result = engine.deidentify(data, "tenant-a")
    except SightlineError as err:
        assert 400 <= err.status < 500, err.detail
        return
    out = pydicom.dcmread(BytesIO(result.data))
    assert out.PatientIdentityRemoved == "YES"
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    for value in _identity(data):
        assert value not in result.data
