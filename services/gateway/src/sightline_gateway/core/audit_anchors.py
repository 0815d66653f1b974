"""The audit chain's head, anchored outside the database at intervals.

Each anchor is written to the object store twice: ``audit/anchors/<seq>.json`` (kept, one per
anchor, for forensics) and ``audit/anchor-head.json`` (the newest, read by verification), and
logged as one line that the log pipeline keeps elsewhere again. Someone who can delete the newest
events in the database cannot also move the anchor back without write access to the bucket
(S3 Object Lock on ``audit/anchors/`` makes those copies immutable). Events newer than the last
anchor (at most one interval) are not covered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sightline_common.storage import ObjectStore

from sightline_gateway.core.audit import Anchor

log = logging.getLogger(__name__)

HEAD_KEY = "audit/anchor-head.json"
ANCHORS_PREFIX = "audit/anchors/"

Head = Callable[[], Awaitable[tuple[int, str] | None]]


class AuditAnchors:
    """Reads and advances the anchor in an object store; ``head`` reads the chain's newest event."""

    def __init__(self, store: ObjectStore, head: Head) -> None:
        self.store = store
        self.head = head

    async def latest(self) -> Anchor | None:
        """The newest anchor, ``None`` before the first one."""
        if not await asyncio.to_thread(self.store.exists, HEAD_KEY):
            return None
        return Anchor.from_json(await asyncio.to_thread(self.store.get, HEAD_KEY))

    async def anchor(self) -> Anchor | None:
        """Anchor the chain's current head when it moved past the newest anchor."""
        head = await self.head()
        if head is None:
            return None
        current = await self.latest()
        if current is not None and current.seq >= head[0]:
            return current
        anchor = Anchor(seq=head[0], hash=head[1], at=datetime.now(UTC).isoformat(timespec="seconds"))
        data = anchor.to_json()
        key = f"{ANCHORS_PREFIX}{anchor.seq:012d}.json"
        await asyncio.to_thread(self.store.put, key, data, "application/json")
        await asyncio.to_thread(self.store.put, HEAD_KEY, data, "application/json")
        log.info("audit chain anchored: seq=%d head=%s", anchor.seq, anchor.hash)
        return anchor

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        """Anchor every ``interval_s`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.anchor()
            except Exception as exc:  # noqa: BLE001 - retry at the next interval
                log.error("audit chain anchoring failed: %s", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                continue
