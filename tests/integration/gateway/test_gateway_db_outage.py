"""Issue 13: while the database is unreachable, submissions answer 503 with Retry-After and a
problem body, and nothing is half-written; after it is back, everything completes.

A small asyncio TCP proxy sits in front of PostgreSQL (127.0.0.1:5432, trust auth, database
``test``); cutting it closes its listener and every connection, as a database pod restart does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sightline_gateway.db.models import Study
from sqlalchemy import select

from tests.conftest import skip_or_fail_in_ci
from tests.integration.gateway.conftest import PG_URL, drop_schema, pg_reachable
from tests.unit.gateway.gateway_fixtures import harness, phi_dicom, token

pytestmark = pytest.mark.integration


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL until cut; restore listens on the same port again."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()

    def start(self) -> None:
        self.thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def proxied_pg() -> Iterator[tuple[CuttableProxy, str]]:
    if not asyncio.run(pg_reachable()):
        skip_or_fail_in_ci("PostgreSQL not reachable at 127.0.0.1:5432")
    proxy = CuttableProxy()
    proxy.start()
    schema = "gw_outage_" + secrets.token_hex(6)
    try:
        yield proxy, schema
    finally:
        proxy.stop()
        asyncio.run(drop_schema(PG_URL, schema))


def test_submissions_while_the_database_is_cut_get_503_and_nothing_is_half_written(
    proxied_pg: tuple[CuttableProxy, str], tmp_path: Path
) -> None:
    proxy, schema = proxied_pg
    url = PG_URL.replace(":5432/", f":{proxy.port}/")
    with harness(tmp_path, url, database_schema=schema, job_backoff_max_s=0.2) as h:
        assert h.submit(phi_dicom(seed=1), headers={"Idempotency-Key": "before"}).status_code == 202
        proxy.cut()
        during = [h.submit(phi_dicom(seed=10 + n), headers={"Idempotency-Key": f"cut-{n}"}) for n in range(3)]
        for r in during:
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "dependency-unavailable" and "database" in r.json()["detail"]
        assert h.client.get("/health/ready").status_code == 503
        proxy.restore()
        after = h.submit(phi_dicom(seed=2), headers={"Idempotency-Key": "after"})
        assert after.status_code == 202, after.text
        retried = h.submit(phi_dicom(seed=10), headers={"Idempotency-Key": "cut-0"})  # the client retries
        assert retried.status_code == 202, retried.text

        gw = h.client.app.state.gateway  # type: ignore[attr-defined]

        async def studies() -> list[Study]:
            async with gw.sessions() as session:
                return list((await session.scalars(select(Study))).all())

        stored = h.client.portal.call(studies)  # type: ignore[union-attr]
        assert len(stored) == 3
        # No object of a study the database did not take (de-identified instances are stored first).
        on_disk = {
            p.relative_to(tmp_path / "objects").parts[1] for p in (tmp_path / "objects").rglob("*.dcm")
        }
        assert on_disk <= {s.id for s in stored}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses = {h.client.get(f"/v1/studies/{s.id}", headers=token()).json()["status"] for s in stored}
            if statuses == {"completed"}:
                break
            time.sleep(0.1)
        assert statuses == {"completed"}
