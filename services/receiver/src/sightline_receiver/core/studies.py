"""Assembling received instances into studies: a study is complete after an idle timeout.

Every instance is also in the spool (core/spool.py) before it is acknowledged. The assembler keeps
a received instance's bytes in memory for the first delivery, bounded per study and in total;
instances read back from the spool, and studies waiting for a retry, are held by size only and
delivered from the spool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sightline_receiver.core.refusals import Refused, Status


@dataclass(frozen=True)
class Limits:
    idle_timeout_s: float
    max_instances_per_study: int
    max_study_bytes: int
    max_pending_bytes: int


@dataclass
class PendingStudy:
    """Instances of one study of one tenant, by SOPInstanceUID (a resent instance replaces itself).

    An instance's bytes are None when it is in the spool only.
    """

    tenant: str
    study_uid: str
    instances: dict[str, bytes | None] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    last_seen: float = 0.0
    not_before: float = 0.0
    attempts: int = 0

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    @property
    def held(self) -> int:
        """Bytes in memory."""
        return sum(len(b) for b in self.instances.values() if b is not None)


@dataclass(frozen=True)
class CompleteStudy:
    """A study ready for the gateway's intake; ``attempts``: deliveries that failed before."""

    tenant: str
    study_uid: str
    instances: dict[str, bytes | None]
    sizes: dict[str, int]
    attempts: int = 0

    @property
    def size(self) -> int:
        return sum(self.sizes.values())


class StudyAssembler:
    """Thread-safe: pynetdicom calls :meth:`add` from each association's thread."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._studies: dict[tuple[str, str], PendingStudy] = {}
        self._pending_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Identified bytes held in memory."""
        return self._pending_bytes

    @property
    def pending_studies(self) -> int:
        return len(self._studies)

    def add(self, tenant: str, study_uid: str, sop_instance_uid: str, data: bytes) -> bool:
        """Hold an instance; raise :class:`Refused` (0xA700) when a limit would be passed.

        Returns whether it replaced an instance of the same SOPInstanceUID.
        """
        with self._lock:
            study = self._studies.get((tenant, study_uid))
            sizes = study.sizes if study is not None else {}
            resent = sop_instance_uid in sizes
            replaced = sizes.get(sop_instance_uid, 0)
            held = study.instances.get(sop_instance_uid) if study is not None else None
            count = len(sizes) + (not resent)
            if count > self.limits.max_instances_per_study:
                raise Refused(Status.OUT_OF_RESOURCES, "study has too many instances")
            if sum(sizes.values()) - replaced + len(data) > self.limits.max_study_bytes:
                raise Refused(Status.OUT_OF_RESOURCES, "study exceeds the size limit")
            freed = len(held) if held is not None else 0
            if self._pending_bytes - freed + len(data) > self.limits.max_pending_bytes:
                raise Refused(Status.OUT_OF_RESOURCES, "receiver memory limit reached; retry later")
            if study is None:
                study = self._studies[(tenant, study_uid)] = PendingStudy(tenant, study_uid)
            study.instances[sop_instance_uid] = data
            study.sizes[sop_instance_uid] = len(data)
            study.last_seen = self._clock()
            self._pending_bytes += len(data) - freed
            return resent

    def discard(self, tenant: str, study_uid: str, sop_instance_uid: str) -> None:
        """Drop an instance that was not acknowledged after all (its spool write failed)."""
        with self._lock:
            study = self._studies.get((tenant, study_uid))
            if study is None or sop_instance_uid not in study.sizes:
                return
            held = study.instances.pop(sop_instance_uid)
            del study.sizes[sop_instance_uid]
            self._pending_bytes -= len(held) if held is not None else 0
            if not study.sizes:
                del self._studies[(tenant, study_uid)]

    def restore(
        self, tenant: str, study_uid: str, sizes: dict[str, int], *, attempts: int = 0, delay_s: float = 0.0
    ) -> None:
        """Hold spooled instances (by size only) again: read back at start, or to retry a delivery.

        The study is due after the idle timeout, and not before ``delay_s``. Instances received
        again meanwhile are newer and kept. Limits do not apply: these were acknowledged already.
        """
        with self._lock:
            now = self._clock()
            study = self._studies.setdefault((tenant, study_uid), PendingStudy(tenant, study_uid))
            for sop_instance_uid, size in sizes.items():
                if sop_instance_uid not in study.sizes:
                    study.instances[sop_instance_uid] = None
                    study.sizes[sop_instance_uid] = size
            study.last_seen = now
            study.not_before = max(study.not_before, now + delay_s)
            study.attempts = max(study.attempts, attempts)

    def due(self) -> list[CompleteStudy]:
        """Remove and return the studies idle for at least the timeout (and past any retry delay)."""
        now = self._clock()
        cutoff = now - self.limits.idle_timeout_s
        with self._lock:
            keys = [k for k, s in self._studies.items() if s.last_seen <= cutoff and s.not_before <= now]
            return [self._pop(k) for k in keys]

    def drain(self) -> list[CompleteStudy]:
        """Remove and return every pending study (shutdown)."""
        with self._lock:
            return [self._pop(k) for k in list(self._studies)]

    def settle(
        self,
        tenant: str,
        study_uid: str,
        sop_instance_uids: list[str],
        action: Callable[[list[str], bool], None],
    ) -> None:
        """Call ``action(instances, study_idle)`` for the delivered instances not received again since.

        Under the lock, so that an instance resent meanwhile (added here before it is written to the
        spool) is never removed from the spool; ``study_idle``: no instance of the study is pending,
        so its spool directory may go.
        """
        with self._lock:
            study = self._studies.get((tenant, study_uid))
            pending = study.sizes if study is not None else {}
            action([s for s in sop_instance_uids if s not in pending], study is None)

    def _pop(self, key: tuple[str, str]) -> CompleteStudy:
        study = self._studies.pop(key)
        self._pending_bytes -= study.held
        return CompleteStudy(study.tenant, study.study_uid, study.instances, study.sizes, study.attempts)
