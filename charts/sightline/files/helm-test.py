"""helm test: the gateway answers ready, then accepts a synthetic study.

Runs in the gateway image (python, pydicom). The study is generated here: random pixels, no
patient data. Exits non-zero with a reason on the first failure.
"""

import io
import os
import sys
import urllib.error
import urllib.request

BASE = os.environ["SIGHTLINE_TEST_GATEWAY_URL"].rstrip("/")
SUBMIT = os.environ.get("SIGHTLINE_TEST_SUBMIT", "true") == "true"
PATH = os.environ.get("SIGHTLINE_TEST_SUBMIT_PATH", "/v1/studies")
API_KEY = os.environ.get("SIGHTLINE_TEST_API_KEY", "")


def fail(message: str) -> None:
    sys.stderr.write(f"FAIL: {message}\n")
    sys.exit(1)


def synthetic_study() -> bytes:
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("helm-test.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "HELM^TEST"
    ds.PatientID = "HELM-TEST"
    ds.Modality = "XC"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


try:
    with urllib.request.urlopen(f"{BASE}/health/ready", timeout=10) as response:
        if response.status != 200:
            fail(f"/health/ready answered {response.status}")
except urllib.error.URLError as exc:
    fail(f"/health/ready: {exc}")
sys.stdout.write("gateway ready\n")

if SUBMIT:
    if not API_KEY:
        fail("no API key: create the Secret named in tests.apiKeySecret or set tests.submitStudy=false")
    request = urllib.request.Request(
        f"{BASE}{PATH}",
        data=synthetic_study(),
        method="POST",
        headers={"Content-Type": "application/dicom", "X-API-Key": API_KEY},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            if response.status not in (200, 201, 202):
                fail(f"study submission answered {response.status}")
    except urllib.error.HTTPError as exc:
        fail(f"study submission answered {exc.code}")
    sys.stdout.write("synthetic study accepted\n")
