"""Outbound calls to deid (HTTP), preprocess (Open Inference Protocol v2 gRPC) and explain (HTTP).

Each client raises only :mod:`sightline_common.errors` types: a 4xx-class error is final for the
study, :class:`DependencyUnavailable` may be retried. Nothing from the study is put in a
message, span attribute or log line.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
from sightline_common.contracts import ExplainRequest, ExplainResponse
from sightline_common.errors import (
    DependencyUnavailable,
    InvalidInput,
    SightlineError,
)
from sightline_common.http import INPUT_CODES, error_for_code, error_from_problem
from sightline_common.telemetry import inject_headers

log = logging.getLogger(__name__)


def _problem_error(service: str, response: httpx.Response) -> SightlineError:
    """Map a downstream problem+json to our error (its detail is already PHI-free by contract)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_problem(service, response.status_code, body)


@dataclass(frozen=True)
class RiskClasses:
    """An instance's quasi-identifier class keys from deid (keyed hashes, never the values) and
    whether a generalised output may be asked for (see ``core.risk``)."""

    exact: str
    generalised: str
    can_generalise: bool


@dataclass
class DeidOutcome:
    dicom: bytes
    summary: dict[str, Any]
    recipe: str
    classes: RiskClasses | None = None


class Deid(Protocol):
    async def deidentify(self, dicom: bytes, tenant: str, *, generalise: bool = False) -> DeidOutcome: ...


_CLASS_KEY = re.compile(r"^[0-9a-f]{32}$")


def risk_classes(header: str | None) -> RiskClasses | None:
    """The class keys of deid's ``X-Sightline-Deid-Classes`` header; None when absent or malformed."""
    try:
        raw = json.loads(header or "null")
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    exact, general = raw.get("exact"), raw.get("generalised")
    if not (isinstance(exact, str) and isinstance(general, str)):
        return None
    if not (_CLASS_KEY.match(exact) and _CLASS_KEY.match(general)):
        return None
    return RiskClasses(exact, general, raw.get("can_generalise") is True)


class HttpDeid:
    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self.client, self.url, self.timeout_s = client, base_url.rstrip("/") + "/v1/deidentify", timeout_s

    async def deidentify(self, dicom: bytes, tenant: str, *, generalise: bool = False) -> DeidOutcome:
        headers = inject_headers({"Content-Type": "application/dicom", "X-Sightline-Tenant": tenant})
        if generalise:
            headers["X-Sightline-Deid-Generalise"] = "1"
        try:
            response = await self.client.post(
                self.url, content=dicom, headers=headers, timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"deid unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise _problem_error("deid", response)
        try:
            raw = json.loads(response.headers.get("X-Sightline-Deid-Summary", "{}"))
        except ValueError:
            raw = {}
        # Counts, flags and the recipe label only (deid's contract: no values from the study).
        summary = {
            k: v
            for k, v in (raw.items() if isinstance(raw, dict) else [])
            if isinstance(v, int | float | bool)
            or (isinstance(v, str) and len(v) <= 64)
            or (k == "actions" and isinstance(v, dict))
        }
        return DeidOutcome(
            response.content,
            summary,
            response.headers.get("X-Sightline-Deid-Recipe", ""),
            risk_classes(response.headers.get("X-Sightline-Deid-Classes")),
        )


@dataclass
class Inference:
    """One instance's model output as preprocess reports it."""

    probability: float
    logit: float
    image_stats: dict[str, float]
    model_version: int
    manifest_version: str
    placeholder: bool
    extra: dict[str, Any] = field(default_factory=dict)
    #: How unlike the model's training images this one is (None: the model has no such score).
    out_of_scope_score: float | None = None


class Preprocess(Protocol):
    async def infer(self, dicom: bytes, model: str, version: int | None = None) -> Inference: ...


def _param(params: Any, name: str) -> str:
    if name not in params:
        return ""
    p = params[name]
    for kind in ("string_param", "int64_param", "bool_param", "double_param"):
        if p.HasField(kind):
            return str(getattr(p, kind)).lower() if kind == "bool_param" else str(getattr(p, kind))
    return ""


class GrpcPreprocess:
    """Open Inference Protocol v2 over gRPC with ``tritonclient.grpc.aio`` (traceparent in metadata).

    Each call names the model the study was routed to; preprocess builds that model's input.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        from tritonclient.grpc import aio as grpcclient

        self._mod = grpcclient
        self.client = grpcclient.InferenceServerClient(url)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.client.close()

    async def infer(self, dicom: bytes, model: str, version: int | None = None) -> Inference:
        """One instance through preprocess; ``version``: the model version to run (None: Triton's
        choice, the newest its version policy loads)."""
        from tritonclient.utils import InferenceServerException

        g = self._mod
        tensor = g.InferInput("dicom", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([dicom], dtype=np.object_))
        outputs = [
            g.InferRequestedOutput(n) for n in ("probability", "logit", "image_stats", "out_of_scope_score")
        ]
        try:
            result = await self.client.infer(
                model,
                [tensor],
                model_version=str(version) if version is not None else "",
                outputs=outputs,
                headers=inject_headers(),
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise map_grpc_error(str(exc.status() or ""), str(exc.message() or "")) from None
        response = result.get_response()
        params = response.parameters
        fields = [f for f in _param(params, "image_stats_fields").split(",") if f]
        stats = result.as_numpy("image_stats")
        prob = result.as_numpy("probability")
        logit = result.as_numpy("logit")
        if prob is None or logit is None:
            raise DependencyUnavailable("preprocess returned no probability")
        values = [float(v) for v in (stats.reshape(-1) if stats is not None else [])]
        # Sent only for a model with an out-of-scope score; asking for it costs nothing otherwise.
        oos = result.as_numpy("out_of_scope_score")
        return Inference(
            probability=float(prob.reshape(-1)[0]),
            logit=float(logit.reshape(-1)[0]),
            image_stats=dict(zip(fields, values, strict=False)),
            model_version=int(response.model_version or 0) or 1,
            manifest_version=_param(params, "manifest_version"),
            placeholder=_param(params, "placeholder") == "true",
            out_of_scope_score=float(oos.reshape(-1)[0]) if oos is not None else None,
        )


def map_grpc_error(status: str, message: str) -> SightlineError:
    """``"<code>: <detail>"`` from preprocess -> our error; transport failures are retryable."""
    code, _, detail = message.partition(": ")
    if code in INPUT_CODES:
        return error_for_code("preprocess", code, detail)
    if "INVALID_ARGUMENT" in status:
        return InvalidInput("preprocess refused the instance")
    return DependencyUnavailable(f"preprocess unavailable ({status.removeprefix('StatusCode.') or 'error'})")


class Explain(Protocol):
    async def explain(self, request: ExplainRequest) -> ExplainResponse: ...


class HttpExplain:
    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self.client, self.url, self.timeout_s = client, base_url.rstrip("/") + "/v1/explain", timeout_s

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        try:
            response = await self.client.post(
                self.url, json=request.model_dump(), headers=inject_headers(), timeout=self.timeout_s
            )
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"explain unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise _problem_error("explain", response)
        try:
            return ExplainResponse.model_validate(response.json())
        except ValueError as exc:
            raise DependencyUnavailable("explain returned an unexpected body") from exc
