"""Hands complete studies to the gateway: a ticker finds idle studies, a small pool delivers them."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sightline_receiver import metrics
from sightline_receiver.clients.gateway import DeliveryFailed, GatewayIntake
from sightline_receiver.core.refusals import ref
from sightline_receiver.core.studies import CompleteStudy, StudyAssembler

log = logging.getLogger(__name__)


class Forwarder:
    """Delivers each study once it has been idle for the assembler's timeout."""

    def __init__(
        self,
        assembler: StudyAssembler,
        intake: GatewayIntake,
        credentials: dict[str, Path],
        *,
        tick_s: float = 0.25,
        probe_s: float = 5.0,
        workers: int = 2,
    ) -> None:
        self.assembler = assembler
        self.intake = intake
        self.credentials = credentials
        self.tick_s = tick_s
        self.probe_s = probe_s
        #: Whether the gateway answered its last liveness probe (reported, never gating).
        self.gateway_up = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="receiver-deliver")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Deliver what is pending (studies already acknowledged to their senders), then stop."""
        self._stop.set()
        self._thread.join(timeout=5)
        for study in self.assembler.drain():
            self._pool.submit(self.deliver, study)
        self._pool.shutdown(wait=True)
        self.intake.close()

    def _run(self) -> None:
        last_probe = float("-inf")
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            if now - last_probe >= self.probe_s:
                self.gateway_up, last_probe = self.intake.ready(), now
            for study in self.assembler.due():
                self._pool.submit(self.deliver, study)
            metrics.PENDING_BYTES.set(self.assembler.pending_bytes)

    def deliver(self, study: CompleteStudy) -> bool:
        """One study to the gateway's intake; the outcome is logged by hashed study UID."""
        try:
            accepted = self.intake.deliver(study.instances, self.credentials[study.tenant])
        except DeliveryFailed as exc:
            metrics.STUDIES.labels("failed").inc()
            log.error(
                "study %s of tenant %s (%d instances) not delivered: %s",
                ref(study.study_uid),
                study.tenant,
                len(study.instances),
                exc.reason,
            )
            return False
        metrics.STUDIES.labels("delivered").inc()
        log.info(
            "study %s of tenant %s (%d instances, %d bytes, %d refused by the gateway) handed over (%s)",
            ref(study.study_uid),
            study.tenant,
            len(study.instances),
            study.size,
            accepted.failed,
            accepted.location,
        )
        return True
