"""The gateway's HTTP server: uvicorn, with the app told of SIGTERM before connections drain.

On SIGTERM uvicorn stops accepting connections, waits for the requests in flight, and only then
runs the app's shutdown. A synchronous submission waits up to ``sync_timeout_s`` for its study,
so without a word to the app the drain could outlast the pod's grace period (the kubelet then
kills the process: the caller's connection drops and the jobs in hand keep their leases until
they expire). Here the app hears of the signal first (it stops claiming jobs and answers waiting
requests with 202 and the study's Location), and the drain is bounded by the same grace period.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus
from types import FrameType
from typing import Any

import uvicorn
from sightline_common.errors import problem_body
from sightline_common.web import PROBLEM_JSON

from sightline_gateway.settings import GatewaySettings

#: Seconds a caller whose request was cut short by a shutdown is asked to wait before retrying.
SHUTDOWN_RETRY_AFTER_S = 5


class GatewayServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if callable(begin):  # set once the app has started
            begin()
        super().handle_exit(sig, frame)


def server(app: Any, settings: GatewaySettings) -> GatewayServer:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    return GatewayServer(config)


class AnswerCutRequests:
    """ASGI middleware: a request cancelled because the server is shutting down (its drain ran past
    the grace period) is answered 503 with Retry-After, not uvicorn's 500 (no bug of ours): the
    caller retries with the same Idempotency-Key, on another replica, and intake's transaction
    means the study is either stored once or not at all. Any other cancellation is re-raised.
    """

    def __init__(self, app: Any, stopping: Callable[[], bool]) -> None:
        self.app, self.stopping = app, stopping

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started or not self.stopping():
                raise
            body = json.dumps(problem_body(
                HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable",
                "the server shut down before this request was answered: retry it with the same "
                "Idempotency-Key (a study already stored is answered, not stored twice)",
                "shutting-down", instance=scope.get("path"),
            )).encode()
            headers = [(b"content-type", PROBLEM_JSON.encode()),
                       (b"retry-after", str(SHUTDOWN_RETRY_AFTER_S).encode()),
                       (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
