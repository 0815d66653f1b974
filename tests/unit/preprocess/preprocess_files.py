"""Real DICOM files, read only from disk: pydicom's test files and pydicom-data's ``data_store``.

No download is attempted (pydicom's ``get_testdata_file`` would retry for ~22 s on a missing
file): files are looked up in the installed package folders.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from sightline_common.manifest import PreprocessSpec

from tests.conftest import skip_or_fail_in_ci

REPO = Path(__file__).resolve().parents[3]


def _roots() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # pydicom-data installs as data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return roots


def real_file(name: str) -> Path:
    for root in _roots():
        for path in (root / name, *root.rglob(name)):
            if path.is_file():
                return path
    skip_or_fail_in_ci(f"{name} is not installed (pydicom-data)")


def real_bytes(name: str) -> bytes:
    return real_file(name).read_bytes()


def real_dataset(name: str) -> Dataset:
    return pydicom.dcmread(real_file(name))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def accepted(name: str, spec: PreprocessSpec) -> Dataset:
    """A real file relabelled with a modality and SOP class the model accepts."""
    ds = copy.deepcopy(real_dataset(name))
    ds.Modality = spec.accepted_modalities[0]
    ds.SOPClassUID = spec.accepted_sop_classes[0]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds
