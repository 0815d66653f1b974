"""The Grad-CAM heatmap as a DICOM Segmentation: AI-marked, of the de-identified image, IOD-valid."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import SegmentationStorage

from tests.conftest import skip_or_fail_in_ci
from tests.unit.gateway.gateway_fixtures import PHI, Harness, harness, token

SEGMENTATION_STORAGE = SegmentationStorage


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    with harness(tmp_path) as h:
        yield h


def test_the_heatmap_segmentation_is_ai_marked_deidentified_and_valid(h: Harness, tmp_path: Path) -> None:
    study_id = h.submit(mode="sync").headers["Location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while not list((tmp_path / "objects").rglob("heatmap.npy")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The fake explain service stores placeholder bytes; put a real Grad-CAM-shaped map in their place.
    (npy,) = (tmp_path / "objects").rglob("heatmap.npy")
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((224, 224)).astype(np.float16))
    npy.write_bytes(buf.getvalue())

    r = h.client.get(f"/v1/studies/{study_id}/heatmap.dcm", headers=token())
    assert r.status_code == 200, r.text
    seg = dcmread(io.BytesIO(r.content))
    stored = dcmread(io.BytesIO(h.store.get(f"studies/{study_id}/instances/0.dcm")))
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "FRACTIONAL"
    assert seg.StudyInstanceUID == stored.StudyInstanceUID and (seg.Rows, seg.Columns) == (
        stored.Rows,
        stored.Columns,
    )
    assert "AI-generated" in seg.SeriesDescription and seg.ManufacturerModelName == "derm-cnn"
    algorithm = seg.SegmentSequence[0]
    assert algorithm.SegmentAlgorithmType == "AUTOMATIC" and "Grad-CAM" in algorithm.SegmentAlgorithmName
    assert PHI.encode() not in r.content
    again = dcmread(io.BytesIO(h.client.get(f"/v1/studies/{study_id}/heatmap.dcm", headers=token()).content))
    assert again.SOPInstanceUID == seg.SOPInstanceUID  # the same object each time

    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        skip_or_fail_in_ci("dciodvfy not installed (make tools: scripts/get-dicom3tools.sh)")
    path = tmp_path / "seg.dcm"
    path.write_bytes(r.content)
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def test_another_tenant_gets_no_heatmap(h: Harness) -> None:
    study_id = h.submit(mode="sync").headers["Location"].rsplit("/", 1)[1]
    r = h.client.get(f"/v1/studies/{study_id}/heatmap.dcm", headers=token(tenant="hospital-b"))
    assert r.status_code == 404
