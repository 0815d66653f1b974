"""The C-STORE/C-ECHO SCP (pynetdicom): the allow-list, the limits and each request's DIMSE status."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from sightline_receiver import metrics
from sightline_receiver.core.instances import identify
from sightline_receiver.core.refusals import Refused, Status, ref
from sightline_receiver.core.spool import Spool, SpoolError
from sightline_receiver.core.studies import StudyAssembler
from sightline_receiver.settings import ReceiverSettings

log = logging.getLogger(__name__)

#: ErrorComment (0000,0902) is LO: at most 64 characters.
_ERROR_COMMENT_MAX = 64


def status_dataset(status: Status, comment: str | None = None) -> Dataset:
    """A C-STORE response status, with the refusal's reason as ErrorComment."""
    ds = Dataset()
    ds.Status = int(status)
    if comment:
        ds.ErrorComment = comment[:_ERROR_COMMENT_MAX]
    return ds


class StoreSCP:
    """Accepts instances from allowed AE titles into the assembler and the spool, or refuses with a status."""

    def __init__(self, settings: ReceiverSettings, assembler: StudyAssembler, spool: Spool) -> None:
        self.settings = settings
        self.assembler = assembler
        self.spool = spool
        self.tenant_of = settings.tenant_of()
        self.sop_classes = frozenset(settings.sop_classes)
        self.scp_title = settings.ae_title
        self._server: ThreadedAssociationServer | None = None

    def build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_associations = s.max_associations
        ae.maximum_pdu_size = s.max_pdu_bytes
        ae.acse_timeout = s.acse_timeout_s
        ae.dimse_timeout = s.dimse_timeout_s
        ae.network_timeout = s.network_timeout_s
        # Unknown calling AE titles are rejected at association (A-ASSOCIATE-RJ, reason 3).
        ae.require_calling_aet = sorted(self.tenant_of)
        ae.require_called_aet = s.require_called_ae_title
        ae.add_supported_context(Verification)
        for sop_class in s.sop_classes:
            ae.add_supported_context(sop_class, s.transfer_syntaxes)
        return ae

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self.on_connection),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_ABORTED, self.on_aborted),
        ]
        self._server = self.build_ae().start_server(
            (self.settings.host, self.settings.dicom_port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.ssl_context(),
        )

    @property
    def listening(self) -> bool:
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() >= 0

    @property
    def active_associations(self) -> int:
        """Associations open now (each holds a thread and one of ``max_associations`` slots)."""
        return len(self._server.active_associations) if self._server is not None else 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert_file is None or s.tls_key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(s.tls_cert_file, s.tls_key_file)
        if s.tls_ca_file is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(s.tls_ca_file)
        return ctx

    # --- event handlers (pynetdicom calls them from each association's thread) ---

    def on_echo(self, event: evt.Event) -> int:
        return int(Status.SUCCESS)

    def on_accepted(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS.labels("accepted").inc()
        log.info("association accepted from AE %s", ref(event.assoc.requestor.ae_title))

    def on_rejected(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS.labels("rejected").inc()
        title = event.assoc.requestor.ae_title
        if title not in self.tenant_of:
            reason = "calling AE title not in any tenant's allow-list"
        elif self.settings.require_called_ae_title and event.assoc.acceptor.ae_title != self.scp_title:
            reason = "called AE title is not this receiver's"
        else:
            reason = "association limit reached or negotiation refused"
        log.warning("association rejected from AE %s: %s", ref(title), reason)

    def on_connection(self, event: evt.Event) -> None:
        """Give the accepted socket the network timeout and TCP keepalive.

        pynetdicom reads the rest of a PDU with a blocking ``recv`` and an accepted socket has no
        timeout: a peer that went silent mid-PDU (a cable pulled, a crashed modality, a firewall
        dropping the flow) held the association's thread and slot for ever, and the receiver could
        not shut down. With the timeout the read fails, the association is aborted and freed.
        """
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        if sock is not None:
            sock.settimeout(self.settings.network_timeout_s)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def on_aborted(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS.labels("aborted").inc()
        log.warning(
            "association from AE %s aborted; an instance in transfer is discarded",
            ref(event.assoc.requestor.ae_title),
        )

    def on_store(self, event: evt.Event) -> Dataset:
        title = event.assoc.requestor.ae_title
        try:
            status = self.store(title, str(event.context.abstract_syntax), event.encoded_dataset())
        except Refused as exc:
            metrics.INSTANCES.labels(f"0x{int(exc.status):04X}").inc()
            log.warning("C-STORE from AE %s refused with 0x%04X: %s", ref(title), int(exc.status), exc.reason)
            return status_dataset(exc.status, exc.reason)
        metrics.INSTANCES.labels("stored").inc()
        return status_dataset(status)

    def store(self, calling_ae_title: str, sop_class: str, part10: bytes) -> Status:
        """Hold one instance for its study, on disk before success is answered, or raise :class:`Refused`."""
        tenant = self.tenant_of.get(calling_ae_title)
        if tenant is None:  # rejected at association already; kept for defence in depth
            raise Refused(Status.NOT_AUTHORIZED, "calling AE title not allowed")
        if sop_class not in self.sop_classes:
            raise Refused(Status.SOP_CLASS_NOT_SUPPORTED, "SOP class not accepted")
        ids = identify(part10, sop_class)
        resent = self.assembler.add(tenant, ids.study_uid, ids.sop_instance_uid, part10)
        try:
            self.spool.write(tenant, ids.study_uid, ids.sop_instance_uid, part10)
        except SpoolError as exc:
            if not resent:  # a resent instance's earlier copy is acknowledged, spooled, and stays
                self.assembler.discard(tenant, ids.study_uid, ids.sop_instance_uid)
            metrics.SPOOL_WRITE_FAILURES.inc()
            log.error("study %s: instance not spooled (%s)", ref(ids.study_uid), exc.reason)
            raise Refused(Status.OUT_OF_RESOURCES, "instance not stored durably; retry later") from None
        return Status.SUCCESS
