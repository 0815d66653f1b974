"""Triton over Open Inference Protocol v2 gRPC, through KServe's client.

(tritonclient's gRPC module cannot be imported beside kserve: both register the same
protobuf symbols. KServe's client speaks the same protocol.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from numpy.typing import NDArray
from sightline_common.errors import DependencyUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


class TritonClient:
    """The few Triton calls the transformer needs, with readiness cached briefly."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._grpc: InferenceGRPCClient | None = None
        self._ready_cache: tuple[float, bool] = (0.0, False)

    @property
    def _client(self) -> InferenceGRPCClient:
        # Created on first use, inside the server's event loop (grpc.aio channels bind to a loop).
        if self._grpc is None:
            self._grpc = InferenceGRPCClient(
                self.url, timeout=self.timeout_s, channel_args=[("grpc.enable_retries", 0)]
            )
        return self._grpc

    async def model_ready(self, model: str) -> bool:
        now = time.monotonic()
        if now - self._ready_cache[0] < 0.5:
            return self._ready_cache[1]
        try:
            ok = bool(await self._client.is_server_ready() and await self._client.is_model_ready(model))
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, deadline: all "not ready"
            log.debug("Triton readiness failed: %s", type(exc).__name__)
            ok = False
        self._ready_cache = (now, ok)
        return ok

    async def metadata(self, model: str) -> ModelMetadata:
        stub = self._client._client_stub  # KServe's client has no metadata call of its own
        try:
            md = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=2.0)
        except Exception as exc:
            raise DependencyUnavailable("Triton model metadata unavailable") from exc

        def specs(items: object) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in items)  # type: ignore[attr-defined]

        return ModelMetadata(md.name, tuple(md.versions), specs(md.inputs), specs(md.outputs))

    async def infer(
        self,
        model: str,
        input_name: str,
        batch: NDArray[np.float32],
        output_names: Sequence[str],
        version: str | None = None,
    ) -> tuple[list[NDArray[np.float32]], str]:
        """Run one batch on ``version`` (None: Triton's choice, the newest its version policy
        loads); return the named outputs (in that order) and the model version that served it."""
        tensor = InferInput(input_name, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=True)
        request = InferRequest(model_name=model, infer_inputs=[tensor], model_version=version)
        try:
            response = await self._client.infer(request, timeout=self.timeout_s)
        except Exception as exc:
            raise DependencyUnavailable(f"Triton inference failed ({type(exc).__name__})") from exc
        by_name = {out.name: out for out in response.outputs}
        missing = [n for n in output_names if n not in by_name]
        if missing:
            raise DependencyUnavailable(f"Triton response has no output {', '.join(missing)}")
        arrays = [by_name[n].as_numpy().astype(np.float32) for n in output_names]
        return arrays, str(response.model_version or "")

    async def close(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()
