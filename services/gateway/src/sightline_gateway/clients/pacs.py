"""Sending result objects to a hospital PACS: DICOMweb STOW-RS (httpx) or DIMSE C-STORE (pynetdicom).

A failed send raises :class:`SendFailed`, ``final`` when the PACS refused the objects for good
(retrying cannot help) and otherwise transient. Reasons name status codes and error classes, never
a value of the objects sent.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from typing import Protocol

import httpx
from pydicom import dcmread
from pynetdicom import AE

from sightline_gateway.core.dicomweb import multipart_related
from sightline_gateway.settings import PacsDestination

#: HTTP answers worth retrying: the PACS is busy or down, or our credential/URL is (still) wrong.
TRANSIENT_HTTP = frozenset({401, 403, 404, 405, 408, 429})
#: C-STORE status classes worth retrying: 0xA7xx "out of resources" (PS3.4 B.2.3).
_OUT_OF_RESOURCES = 0xA700


class SendFailed(Exception):
    def __init__(self, reason: str, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


class PacsSender(Protocol):
    async def send(self, destination: PacsDestination, objects: Sequence[bytes]) -> None:
        """Store every object in the PACS, or raise :class:`SendFailed`."""


class StowRsSender:
    """STOW-RS (PS3.18 10.5): one multipart/related request holding every object."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def send(self, destination: PacsDestination, objects: Sequence[bytes]) -> None:
        assert destination.stow_url is not None
        body, content_type = multipart_related(objects)
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        if destination.authorization_file is not None:
            try:
                headers["Authorization"] = destination.authorization_file.read_text().strip()
            except OSError as exc:
                raise SendFailed(f"authorization file unreadable ({type(exc).__name__})") from None
        try:
            response = await self.http.post(
                destination.stow_url, content=body, headers=headers, timeout=destination.timeout_s
            )
        except httpx.HTTPError as exc:
            raise SendFailed(f"STOW-RS unreachable ({type(exc).__name__})") from None
        if response.status_code == 200:
            return
        final = 400 <= response.status_code < 500 and response.status_code not in TRANSIENT_HTTP
        # 202: some instances were refused; sending them all again is safe (same SOP instance UIDs).
        raise SendFailed(f"STOW-RS answered {response.status_code}", final=final)


class CStoreSender:
    """C-STORE (PS3.4 B) over one association per delivery, as the calling AE of the destination."""

    async def send(self, destination: PacsDestination, objects: Sequence[bytes]) -> None:
        await asyncio.to_thread(self._send, destination, objects)

    @staticmethod
    def _send(destination: PacsDestination, objects: Sequence[bytes]) -> None:
        assert destination.host is not None and destination.port is not None
        datasets = [dcmread(io.BytesIO(data)) for data in objects]
        ae = AE(ae_title=destination.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
        for sop_class, syntax in sorted(
            {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
        ):
            ae.add_requested_context(sop_class, [syntax])
        try:
            assoc = ae.associate(
                destination.host, destination.port, ae_title=str(destination.called_ae_title)
            )
        except (OSError, RuntimeError) as exc:
            raise SendFailed(f"C-STORE association failed ({type(exc).__name__})") from None
        if not assoc.is_established:
            reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            # A rejection for our AE title or a missing SOP class stays until someone reconfigures:
            # retried within the budget all the same, as the PACS may be restarting.
            raise SendFailed(f"C-STORE association {reason}")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    raise SendFailed("C-STORE: no response (association lost)")
                if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success and warnings
                    final = (code & 0xFF00) != _OUT_OF_RESOURCES
                    raise SendFailed(f"C-STORE status 0x{code:04X}", final=final)
        finally:
            if assoc.is_established:
                assoc.release()
