"""The HTTP helpers every service shares: bounded bodies, tenant names, downstream problems."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sightline_common import errors
from sightline_common.http import error_for_code, error_from_problem, is_valid_tenant, read_body
from sightline_common.web import install_error_handlers

LIMIT = 1000


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, "test")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await read_body(request, LIMIT))}

    return app


def test_body_at_the_limit_is_read_whole() -> None:
    with TestClient(_app()) as client:
        r = client.post("/echo", content=b"x" * LIMIT)
    assert r.status_code == 200 and r.json() == {"size": LIMIT}


def test_declared_length_over_the_limit_is_413_with_the_limit() -> None:
    with TestClient(_app()) as client:
        r = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json()["code"] == "payload-too-large" and r.json()["limit"] == LIMIT


async def test_streamed_body_is_abandoned_at_the_limit() -> None:
    """A client streaming without Content-Length is cut off at the limit, not buffered whole."""
    sent: list[int] = []

    async def receive() -> dict[str, object]:
        sent.append(400)
        return {"type": "http.request", "body": b"y" * 400, "more_body": len(sent) < 50}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(errors.PayloadTooLarge):
        await read_body(request, LIMIT)
    assert sum(sent) <= LIMIT + 400, "kept reading after the limit"


def test_malformed_content_length_is_400() -> None:
    with TestClient(_app()) as client:
        r = client.post("/echo", content=b"abc", headers={"content-length": "3x"})
    assert r.status_code == 400 and r.json()["reason"] == "content-length"


@pytest.mark.parametrize(
    ("tenant", "ok"),
    [("dev-hospital", True), ("a", True), ("St.Marys_2", True), ("", False), ("-lead", False),
     ("x" * 65, False), ("a/b", False), (None, False), (7, False)],
)
def test_tenant_names(tenant: object, ok: bool) -> None:
    assert is_valid_tenant(tenant) is ok


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, {"code": "dependency-unavailable"}, errors.DependencyUnavailable),
        (500, {"code": "internal"}, errors.DependencyUnavailable),
        (429, {"code": "rate-limited"}, errors.DependencyUnavailable),
        (422, {"code": "unprocessable", "detail": "modality"}, errors.UnprocessableInput),
        (422, {}, errors.UnprocessableInput),
        (413, {"code": "payload-too-large"}, errors.PayloadTooLarge),
        (413, None, errors.PayloadTooLarge),
        (415, {"code": "unsupported-media-type"}, errors.UnsupportedMediaType),
        (400, {"code": "invalid-input"}, errors.InvalidInput),
        # A downstream's auth trouble is not our caller's: it must not pass on as 401/403.
        (401, {"code": "unauthorised"}, errors.InvalidInput),
    ],
)
def test_downstream_problem_maps_to_our_error(status: int, body: object, expected: type) -> None:
    err = error_from_problem("deid", status, body)
    assert type(err) is expected
    assert err.detail.startswith("deid")


def test_downstream_detail_is_shortened() -> None:
    err = error_for_code("preprocess", "invalid-input", "d" * 5000)
    assert isinstance(err, errors.InvalidInput) and len(err.detail) < 320


def test_every_error_code_names_one_class() -> None:
    for code in ("invalid-input", "unprocessable", "payload-too-large", "not-found", "integrity"):
        cls = errors.error_class(code)
        assert cls is not None and cls.code == code
    assert errors.error_class("no-such-code") is None
