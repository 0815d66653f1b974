"""The KServe transformer: DICOM bytes in, calibrated probability and image statistics out
(and the out-of-scope score, ``out_of_scope_score``, for a model that has one)."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model
from kserve.errors import InvalidInput as KServeInvalidInput
from kserve.errors import ServerNotReady
from opentelemetry import trace
from sightline_common.errors import DependencyUnavailable, SightlineError, UnprocessableInput
from sightline_common.manifest import ModelManifest, own_version_manifest
from sightline_common.metrics import STAGE_DURATION

from sightline_preprocess.clients.triton import ModelMetadata, TritonClient
from sightline_preprocess.core.contract import contract_problems
from sightline_preprocess.core.transform import STAT_FIELDS, transform_batch

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

DICOM_INPUT = "dicom"
OUT_OF_SCOPE_OUTPUT = "out_of_scope_score"


class Unprocessable(KServeInvalidInput):  # type: ignore[misc]
    """Well-formed input the model does not accept (gRPC INVALID_ARGUMENT, ``unprocessable:``, 422)."""


class Unavailable(ServerNotReady):  # type: ignore[misc]
    """Triton is unreachable or disagrees with the manifest: gRPC UNAVAILABLE, HTTP 503.

    KServe's gRPC interceptor reads ``reason``, which ``ServerNotReady`` lacks.
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.error_msg = self.reason = message


def _as_kserve_error(exc: SightlineError) -> Exception:
    """Carry our error code through KServe's error mapping (`<code>: <detail>`).

    The gRPC status says the class (INVALID_ARGUMENT, UNAVAILABLE); the ``<code>`` prefix
    says which of Sightline's errors it was, so a caller maps it back to 400/413/422/503.
    """
    message = f"{exc.code}: {exc.detail}"
    if isinstance(exc, DependencyUnavailable):
        return Unavailable(message)
    if isinstance(exc, UnprocessableInput):
        return Unprocessable(message)
    error: Exception = KServeInvalidInput(message)
    return error


def requested_version(value: object) -> str | None:
    """The model version a request names (``ModelInferRequest.model_version``), None for Triton's
    choice (its version policy's newest). Anything but a positive integer is refused."""
    if value is None or value == "":
        return None
    text = str(value)
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise KServeInvalidInput("invalid-input: model_version must be a positive integer")
    return text


class DicomTransformer(Model):  # type: ignore[misc]
    """A KServe ``Model`` in the transformer role; its name equals the Triton model's."""

    def __init__(
        self,
        manifest: ModelManifest,
        triton: TritonClient,
        max_bytes: int,
        decode_threads: int = 1,
        repository: Path | None = None,
    ) -> None:
        super().__init__(manifest.name)
        self.manifest = manifest
        #: Where another version's own manifest is read from (``<name>/<version>/manifest.json``).
        self.repository = repository
        self._versions: dict[str, ModelManifest] = {}
        self.triton = triton
        self.max_bytes = max_bytes
        self._metadata: ModelMetadata | None = None
        self.contract_errors: list[str] = []
        self.ready = True  # the process is up; readiness of the path is `healthy()`
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")

    def manifest_for(self, version: str | None) -> ModelManifest:
        """The manifest of the version a request names: its own ``<version>/manifest.json`` when
        the repository keeps one (its preprocessing and calibration), else the model's."""
        if version is None or version == str(self.manifest.version) or self.repository is None:
            return self.manifest
        found = self._versions.get(version)
        if found is None:
            found = own_version_manifest(self.repository, self.name, int(version)) or self.manifest
            self._versions[version] = found
        return found

    async def _current_metadata(self) -> ModelMetadata:
        if self._metadata is None:
            md = await self.triton.metadata(self.name)
            self.contract_errors = contract_problems(self.manifest, md)
            if self.contract_errors:
                log.error("Triton model disagrees with the manifest: %s", "; ".join(self.contract_errors))
            self._metadata = md
        return self._metadata

    async def healthy(self) -> bool:
        """Ready only while Triton serves the model and its metadata matches the manifest."""
        if not await self.triton.model_ready(self.name):
            self._metadata = None  # re-read after Triton comes back (it may serve another config)
            return False
        try:
            await self._current_metadata()
        except SightlineError:
            return False
        return not self.contract_errors

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if not isinstance(payload, InferRequest):
            raise KServeInvalidInput("only Open Inference Protocol v2 requests are accepted")
        inputs = {i.name: i for i in payload.inputs}
        if DICOM_INPUT not in inputs or inputs[DICOM_INPUT].datatype != "BYTES":
            raise KServeInvalidInput(f"invalid-input: a BYTES input named {DICOM_INPUT!r} is required")
        version = requested_version(payload.model_version)
        items = [bytes(b) for b in inputs[DICOM_INPUT].as_numpy().reshape(-1)]
        start = time.perf_counter()
        with tracer.start_as_current_span("preprocess.transform") as span:
            span.set_attribute("sightline.batch_size", len(items))
            try:
                # Decoding is CPU work that partly releases the GIL (codecs, numpy, PIL): off the
                # event loop, so gRPC I/O of other requests goes on meanwhile.
                batch, stats = await asyncio.get_running_loop().run_in_executor(
                    self._decode_pool,
                    transform_batch,
                    items,
                    self.manifest_for(version).preprocessing,
                    self.max_bytes,
                )
            except SightlineError as exc:
                span.set_attribute("sightline.error", exc.code)
                raise _as_kserve_error(exc) from exc
        STAGE_DURATION.labels("preprocess", "transform").observe(time.perf_counter() - start)
        return batch, stats, version

    async def predict(self, payload: Any, headers: dict[str, str] | None = None, **_: Any) -> Any:
        batch, stats, requested = payload
        try:
            md = await self._current_metadata()
            if self.contract_errors:
                raise DependencyUnavailable("Triton's model disagrees with the manifest")
            start = time.perf_counter()
            with tracer.start_as_current_span("triton.infer") as span:
                span.set_attribute("sightline.model.name", self.name)
                span.set_attribute("sightline.batch_size", int(batch.shape[0]))
                outputs, version = await self.triton.infer(
                    self.name, md.inputs[0].name, batch, [o.name for o in md.outputs], version=requested
                )
                span.set_attribute("sightline.model.version", version)
            STAGE_DURATION.labels("preprocess", "inference").observe(time.perf_counter() - start)
        except SightlineError as exc:
            raise _as_kserve_error(exc) from exc
        return outputs, stats, version

    async def postprocess(self, result: Any, headers: dict[str, str] | None = None, **_: Any) -> Any:
        model_outputs, stats, version = result
        logits = model_outputs[0].reshape(-1)
        manifest = self.manifest_for(version or None)
        probs = np.asarray([manifest.calibrated_probability(float(z)) for z in logits], np.float32)
        named = [
            ("probability", probs.reshape(-1, 1)),
            ("logit", logits.reshape(-1, 1).astype(np.float32)),
            ("image_stats", stats),
        ]
        if len(model_outputs) > 1:  # the contract allows a second output only as the out-of-scope score
            named.append((OUT_OF_SCOPE_OUTPUT, model_outputs[1].reshape(-1, 1).astype(np.float32)))
        outputs = []
        for name, arr in named:
            out = InferOutput(name=name, shape=list(arr.shape), datatype="FP32")
            out.set_data_from_numpy(arr, binary_data=True)
            outputs.append(out)
        return InferResponse(
            response_id="",
            model_name=self.name,
            model_version=version,
            infer_outputs=outputs,
            parameters={
                "image_stats_fields": ",".join(STAT_FIELDS),
                "manifest_version": str(manifest.version),
                "placeholder": str(manifest.placeholder).lower(),
            },
        )
