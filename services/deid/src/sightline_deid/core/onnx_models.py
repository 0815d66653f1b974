"""The ONNX models shipped inside the deid package, each checked against its sha256 before use."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from sightline_deid.core.ocr import OcrUnavailable


def shipped(name: str) -> Path:
    """Where the package keeps the model file ``name`` (``resources/text_detector``, see SOURCE.md)."""
    return Path(str(resources.files("sightline_deid.resources.text_detector").joinpath(name)))


def checked_session(path: Path, sha256: str, what: str) -> Any:
    """An onnxruntime session of the model at ``path``, one thread (the service de-identifies
    requests in parallel); :class:`OcrUnavailable` when the file is missing or not ``sha256``."""
    import onnxruntime as ort

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OcrUnavailable(f"{what} missing ({type(exc).__name__})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise OcrUnavailable(f"{what} does not match its sha256")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # The digest is checked: a model that still fails to load is a fault of this installation.
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
