"""The gateway's HTTP server: uvicorn, with the app told of SIGTERM before connections drain.

On SIGTERM uvicorn stops accepting connections, waits for the requests in flight, and only then
runs the app's shutdown. A synchronous submission waits up to ``sync_timeout_s`` for its study,
so without a word to the app the drain could outlast the pod's grace period (the kubelet then
kills the process: the caller's connection drops and the jobs in hand keep their leases until
they expire). Here the app hears of the signal first (it stops claiming jobs and answers waiting
requests with 202 and the study's Location), and the drain is bounded by the same grace period.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn

from sightline_gateway.settings import GatewaySettings


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
