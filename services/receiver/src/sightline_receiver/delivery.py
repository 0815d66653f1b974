"""Hands complete studies to the gateway: a ticker finds idle studies, a small pool delivers them.

A study stays in the spool until it is settled: removed when the gateway took it (2xx) or refused it
for good (a final 4xx: its answer on the study, and keeping identified data past it would serve no
purpose), quarantined when it stayed undeliverable for the spool's maximum age. Until then, each
failed delivery puts it back in the assembler, due again after a backoff that doubles to a maximum.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from sightline_receiver import metrics
from sightline_receiver.clients.gateway import DeliveryFailed, GatewayIntake
from sightline_receiver.core.refusals import ref
from sightline_receiver.core.sealing import Unreadable
from sightline_receiver.core.spool import Spool, SpoolError
from sightline_receiver.core.studies import CompleteStudy, StudyAssembler

log = logging.getLogger(__name__)


class Forwarder:
    """Delivers each study once it has been idle for the assembler's timeout; settles it in the spool."""

    def __init__(
        self,
        assembler: StudyAssembler,
        intake: GatewayIntake,
        credentials: dict[str, Path],
        spool: Spool,
        *,
        max_age_s: float,
        backoff_s: float = 30.0,
        backoff_max_s: float = 900.0,
        tick_s: float = 0.25,
        probe_s: float = 5.0,
        workers: int = 2,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.assembler = assembler
        self.intake = intake
        self.credentials = credentials
        self.spool = spool
        self.max_age_s = max_age_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.tick_s = tick_s
        self.probe_s = probe_s
        self._wall = wall_clock
        #: Whether the gateway answered its last liveness probe (reported, never gating).
        self.gateway_up = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="receiver-deliver")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_s: float = 15.0) -> None:
        """Deliver what is pending for up to ``grace_s``; what is left stays in the spool for the next start.

        Pending studies are acknowledged to their senders already: on a pod whose spool is an
        emptyDir, delivering them now is what keeps them.
        """
        self._stop.set()
        self._thread.join(timeout=5)
        futures = [self._pool.submit(self.deliver, study) for study in self.assembler.drain()]
        wait(futures, timeout=grace_s)
        self.intake.stop_retrying()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.intake.close()
        studies, _ = self.spool.usage()
        if studies:
            log.warning("%d studies left in the spool for the next start", studies)

    def _run(self) -> None:
        last_probe = float("-inf")
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            if now - last_probe >= self.probe_s:
                self.gateway_up, last_probe = self.intake.ready(), now
            for study in self.assembler.due():
                self._pool.submit(self.deliver, study)
            self.update_gauges()

    def update_gauges(self) -> None:
        metrics.PENDING_BYTES.set(self.assembler.pending_bytes)
        studies, size = self.spool.usage()
        metrics.SPOOL_STUDIES.set(studies)
        metrics.SPOOL_BYTES.set(size)

    def deliver(self, study: CompleteStudy) -> bool:
        """One study to the gateway's intake; the outcome is logged by hashed study UID."""
        try:
            instances = self._load(study)
        except OSError as exc:
            self._later(study, study.sizes, f"spool unreadable ({type(exc).__name__})")
            return False
        if not instances:
            return False
        try:
            accepted = self.intake.deliver(list(instances.values()), self.credentials[study.tenant])
        except DeliveryFailed as exc:
            if not exc.final:
                self._later(study, {s: study.sizes[s] for s in instances}, exc.reason)
                return False
            metrics.STUDIES.labels("refused").inc()
            log.error(
                "study %s of tenant %s (%d instances) refused for good, removed from the spool: %s",
                ref(study.study_uid),
                study.tenant,
                len(instances),
                exc.reason,
            )
            self._settle(study, list(instances), quarantine=False)
            return False
        metrics.STUDIES.labels("delivered").inc()
        self._settle(study, list(instances), quarantine=False)
        log.info(
            "study %s of tenant %s (%d instances, %d bytes, %d refused by the gateway) handed over (%s)",
            ref(study.study_uid),
            study.tenant,
            len(instances),
            sum(len(i) for i in instances.values()),
            accepted.failed,
            accepted.location,
        )
        return True

    def _load(self, study: CompleteStudy) -> dict[str, bytes]:
        """The instances, from memory or the spool; a spooled file that does not open goes to quarantine."""
        loaded: dict[str, bytes] = {}
        for sop_uid, held in study.instances.items():
            if held is not None:
                loaded[sop_uid] = held
                continue
            try:
                loaded[sop_uid] = self.spool.read(study.tenant, study.study_uid, sop_uid)
            except FileNotFoundError:
                log.warning(
                    "study %s: a spooled instance is missing; delivered without it", ref(study.study_uid)
                )
            except Unreadable as exc:
                metrics.SPOOL_QUARANTINED.labels("unreadable").inc()
                log.error("study %s: a spooled instance quarantined: %s", ref(study.study_uid), exc)
                self._settle(study, [sop_uid], quarantine=True)
        return loaded

    def _later(self, study: CompleteStudy, sizes: dict[str, int], reason: str) -> None:
        """Keep an undelivered study in the spool for another attempt, or quarantine it past the max age."""
        spooled_at = self.spool.spooled_at(study.tenant, study.study_uid)
        age_s = self._wall() - spooled_at if spooled_at is not None else 0.0
        if age_s >= self.max_age_s:
            metrics.STUDIES.labels("expired").inc()
            metrics.SPOOL_QUARANTINED.labels("expired").inc(len(sizes))
            log.error(
                "study %s of tenant %s (%d instances) quarantined: undelivered for %.1f h (%s)",
                ref(study.study_uid),
                study.tenant,
                len(sizes),
                age_s / 3600,
                reason,
            )
            self._settle(study, list(sizes), quarantine=True)
            return
        delay_s = min(self.backoff_max_s, self.backoff_s * 2 ** min(study.attempts, 32))
        self.assembler.restore(
            study.tenant, study.study_uid, sizes, attempts=study.attempts + 1, delay_s=delay_s
        )
        metrics.STUDIES.labels("retrying").inc()
        log.warning(
            "study %s of tenant %s (%d instances) not delivered, kept in the spool; retry in %.0f s: %s",
            ref(study.study_uid),
            study.tenant,
            len(sizes),
            delay_s,
            reason,
        )

    def _settle(self, study: CompleteStudy, sop_uids: list[str], *, quarantine: bool) -> None:
        """Remove (or quarantine) the instances from the spool, except those received again since."""
        tenant, study_uid = study.tenant, study.study_uid

        def act(settled: list[str], study_idle: bool) -> None:
            if quarantine:
                self.spool.quarantine(tenant, study_uid, settled, prune=study_idle)
            else:
                self.spool.remove(tenant, study_uid, settled, prune=study_idle)

        try:
            self.assembler.settle(tenant, study_uid, sop_uids, act)
        except SpoolError as exc:
            log.error(
                "study %s: spool not cleaned up (%s); it is delivered again after the next start",
                ref(study_uid),
                exc.reason,
            )
