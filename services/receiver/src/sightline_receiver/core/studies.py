"""Assembling received instances into studies: a study is complete after an idle timeout.

Identified bytes are held in memory only, bounded per study and in total, until the study is
handed to the gateway, which de-identifies before anything is stored.
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
    """Instances of one study of one tenant, by SOPInstanceUID (a resent instance replaces itself)."""

    tenant: str
    study_uid: str
    instances: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    last_seen: float = 0.0


@dataclass(frozen=True)
class CompleteStudy:
    """A study ready for the gateway's intake."""

    tenant: str
    study_uid: str
    instances: list[bytes]

    @property
    def size(self) -> int:
        return sum(len(i) for i in self.instances)


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
        return self._pending_bytes

    @property
    def pending_studies(self) -> int:
        return len(self._studies)

    def add(self, tenant: str, study_uid: str, sop_instance_uid: str, data: bytes) -> None:
        """Hold an instance; raise :class:`Refused` (0xA700) when a limit would be passed."""
        with self._lock:
            study = self._studies.get((tenant, study_uid))
            replaced = len(study.instances.get(sop_instance_uid, b"")) if study is not None else 0
            count = len(study.instances) if study is not None else 0
            size = study.size if study is not None else 0
            if study is None or sop_instance_uid not in study.instances:
                count += 1
            if count > self.limits.max_instances_per_study:
                raise Refused(Status.OUT_OF_RESOURCES, "study has too many instances")
            if size - replaced + len(data) > self.limits.max_study_bytes:
                raise Refused(Status.OUT_OF_RESOURCES, "study exceeds the size limit")
            if self._pending_bytes - replaced + len(data) > self.limits.max_pending_bytes:
                raise Refused(Status.OUT_OF_RESOURCES, "receiver memory limit reached; retry later")
            if study is None:
                study = self._studies[(tenant, study_uid)] = PendingStudy(tenant, study_uid)
            study.instances[sop_instance_uid] = data
            study.size += len(data) - replaced
            study.last_seen = self._clock()
            self._pending_bytes += len(data) - replaced

    def due(self) -> list[CompleteStudy]:
        """Remove and return the studies idle for at least the timeout."""
        cutoff = self._clock() - self.limits.idle_timeout_s
        with self._lock:
            keys = [k for k, s in self._studies.items() if s.last_seen <= cutoff]
            return [self._pop(k) for k in keys]

    def drain(self) -> list[CompleteStudy]:
        """Remove and return every pending study (shutdown)."""
        with self._lock:
            return [self._pop(k) for k in list(self._studies)]

    def _pop(self, key: tuple[str, str]) -> CompleteStudy:
        study = self._studies.pop(key)
        self._pending_bytes -= study.size
        return CompleteStudy(study.tenant, study.study_uid, list(study.instances.values()))
