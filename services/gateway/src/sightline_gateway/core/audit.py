"""The audit chain's hashing: pure functions over an event's canonical content.

Each event's hash is SHA-256 over a canonical JSON form of its fields, its sequence number and
the previous event's hash, so changing any field of any event, deleting one, or reordering
breaks every later link. The first event links to :data:`GENESIS`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq",
    "id",
    "at",
    "tenant_id",
    "actor",
    "roles",
    "action",
    "resource_type",
    "resource_id",
    "outcome",
    "trace_id",
    "prev_hash",
)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(event: Mapping[str, Any]) -> bytes:
    """Sorted-key, whitespace-free JSON of the hashed fields (datetimes as UTC ISO-8601, µs)."""
    body = {}
    for name in HASHED_FIELDS:
        value = event.get(name)
        if isinstance(value, datetime):
            value = _iso(value)
        elif name == "roles":
            value = sorted(value or [])
        body[name] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def event_hash(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


@dataclass
class ChainReport:
    """What verification found: ``ok`` only when every link and every hash holds."""

    ok: bool
    events: int
    head: str
    problems: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Anchor:
    """The chain's head (``seq`` and its ``hash``) as copied outside the database at ``at``.

    The chain alone cannot show that its newest events were deleted: what is left still links.
    An anchor can: the anchored event must still be there, with the anchored hash.
    """

    seq: int
    hash: str
    at: str

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "hash": self.hash, "at": self.at}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Anchor:
        raw = json.loads(data)
        return cls(seq=int(raw["seq"]), hash=str(raw["hash"]), at=str(raw["at"]))


def verify(
    events: Iterable[Mapping[str, Any]], limit: int = 100, anchor: Anchor | None = None
) -> ChainReport:
    """Check every event in ``seq`` order: contiguous numbering, own hash, link to the previous,
    and, given an ``anchor``, that the anchored event is still there with the anchored hash."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    last_seq = 0
    anchored_hash: str | None = None
    problems: list[dict[str, Any]] = []
    for ev in events:
        count += 1
        seq = last_seq = int(ev["seq"])
        if anchor is not None and seq == anchor.seq:
            anchored_hash = str(ev["hash"])
        if seq != expected_seq:
            problems.append(
                {"seq": seq, "problem": "gap", "detail": f"expected seq {expected_seq} (deleted?)"}
            )
        if ev["prev_hash"] != prev:
            problems.append(
                {"seq": seq, "problem": "broken-link", "detail": "prev_hash differs from previous hash"}
            )
        if event_hash(ev) != ev["hash"]:
            problems.append({"seq": seq, "problem": "altered", "detail": "content does not match its hash"})
        prev = str(ev["hash"])
        expected_seq = seq + 1
        if len(problems) >= limit:
            break
    if anchor is not None and len(problems) < limit:
        if last_seq < anchor.seq:
            problems.append(
                {
                    "seq": last_seq + 1,
                    "problem": "truncated",
                    "detail": f"events {last_seq + 1}..{anchor.seq} anchored at {anchor.at} are missing",
                }
            )
        elif anchored_hash is not None and anchored_hash != anchor.hash:
            problems.append(
                {
                    "seq": anchor.seq,
                    "problem": "anchor-mismatch",
                    "detail": f"differs from anchor of {anchor.at}",
                }
            )
    return ChainReport(ok=not problems, events=count, head=prev, problems=problems)
