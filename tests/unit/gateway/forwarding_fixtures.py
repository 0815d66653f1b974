"""A gateway on fakes whose tenant ``hospital-a`` has a PACS: the forwarder's test harness.

``RecordingSender`` stands in for the PACS (or fails like one that is down); ``HeatmapExplain``
writes a real Grad-CAM-shaped map so that the heatmap Segmentation can be built.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sightline_common.contracts import ExplainRequest, ExplainResponse
from sightline_gateway.clients.pacs import PacsSender, SendFailed
from sightline_gateway.settings import PacsDestination

from tests.unit.gateway.gateway_fixtures import (
    FakeExplain,
    Harness,
    app_on_fakes,
    settings,
    token,
)

TENANT = "hospital-a"


class RecordingSender:
    """A PACS that stores what it is sent, or fails (``fail``: transient; ``refuse``: final)."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []
        self.attempts = 0
        self.fail = False
        self.refuse = False
        #: Seconds each send takes (a PACS that is slow to answer).
        self.delay_s = 0.0

    async def send(self, destination: PacsDestination, objects: Sequence[bytes]) -> None:
        self.attempts += 1
        await asyncio.sleep(self.delay_s)
        if self.refuse:
            raise SendFailed("STOW-RS answered 409", final=True)
        if self.fail:
            raise SendFailed("STOW-RS unreachable (ConnectError)")
        self.sent.append(list(objects))


class HeatmapExplain(FakeExplain):
    """The fake explain service, with a heatmap that is a real .npy map."""

    async def explain(self, request: ExplainRequest) -> ExplainResponse:
        response = await super().explain(request)
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).random((32, 32)).astype(np.float16))
        self.store.put(response.heatmap_key, buf.getvalue(), "application/octet-stream")
        return response


def key_file(tmp: Path, *tenants: str) -> Path:
    """The tenant keys of ``tmp``'s gateway, made once (a restarted gateway must open its records)."""
    path = tmp / "tenant-keys.json"
    if not path.exists():
        path.write_text(json.dumps({t: base64.b64encode(os.urandom(32)).decode() for t in tenants}))
    return path


@contextmanager
def forwarding_harness(
    tmp: Path,
    senders: dict[str, PacsSender] | None,
    destination: PacsDestination | None = None,
    **overrides: Any,
) -> Iterator[Harness]:
    """A gateway on fakes (real deid) whose tenant ``hospital-a`` files results in ``destination``.

    ``senders``: PACS senders by kind; None: the real STOW-RS and C-STORE senders.
    """
    values: dict[str, Any] = {
        "pacs_destinations": {
            TENANT: destination or PacsDestination(name="pacs-a", stow_url="http://pacs.invalid")
        },
        "reidentification_keys_file": key_file(tmp, TENANT),
        "delivery_backoff_s": 0.05,
        "delivery_backoff_max_s": 0.2,
        **overrides,
    }
    app, store, pre, exp = app_on_fakes(settings(tmp, **values), HeatmapExplain, senders=senders)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Harness(client, pre, exp, store)


def wait_delivery(h: Harness, study_id: str, timeout_s: float = 20) -> dict[str, Any]:
    """The result once its delivery has ended (delivered or failed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = h.client.get(f"/v1/studies/{study_id}/result", headers=token())
        body: dict[str, Any] = r.json()
        if r.status_code == 200 and body.get("delivery", {}).get("status") in ("delivered", "failed"):
            return body
        assert time.monotonic() < deadline, f"delivery did not end: {body}"
        time.sleep(0.05)


def database_text(tmp: Path) -> bytes:
    """Every row of the harness's SQLite database, as text to scan for planted PHI."""
    con = sqlite3.connect(tmp / "gw.db")
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()]
        return "\n".join(repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"')).encode()
    finally:
        con.close()


def stored_text(tmp: Path) -> bytes:
    """The database's rows and every stored object, to scan for planted PHI."""
    objects = b"".join(p.read_bytes() for p in (tmp / "objects").rglob("*") if p.is_file())
    return database_text(tmp) + objects
