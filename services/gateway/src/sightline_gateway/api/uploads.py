"""Reading an upload (DICOM, multipart/related, or a form with files or a photograph) into instances."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from fastapi import Request
from sightline_common.errors import InvalidInput, PayloadTooLarge, SightlineError, UnsupportedMediaType
from sightline_common.http import read_body

from sightline_gateway.core import ingest
from sightline_gateway.settings import GatewaySettings


@dataclass
class Upload:
    """Identified instances (in memory only) and the request's fingerprint.

    The fingerprint is a SHA-256 over the uploaded parts' content (not the multipart framing,
    whose boundary a client may change when it retries), for the Idempotency-Key check.
    """

    instances: list[bytes]
    fingerprint: str

    def request_fingerprint(self, **options: object) -> str:
        """The fingerprint of the content and the request's ``options`` (such as ``explain``)."""
        text = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
        return hashlib.sha256(f"{self.fingerprint}\0{text}".encode()).hexdigest()


async def read_instances(request: Request, settings: GatewaySettings) -> list[bytes]:
    """The upload as identified DICOM instances (photographs wrapped), in memory only."""
    return (await read_upload(request, settings)).instances


async def read_upload(request: Request, settings: GatewaySettings) -> Upload:
    """The upload's instances and fingerprint (see :class:`Upload`)."""
    kind = ingest.classify(request.headers.get("content-type"))
    body = await read_body(request, settings.max_upload_bytes)
    if not body:
        raise InvalidInput("empty body")
    instances: list[bytes] = []
    parts: list[bytes] = []
    if kind == "dicom":
        instances = parts = [body]
    elif kind == "multipart-related":
        for part_type, data in ingest.split_multipart_related(request.headers["content-type"], body):
            if part_type != ingest.DICOM:
                raise UnsupportedMediaType("multipart/related parts must be application/dicom")
            instances.append(data)
        parts = instances
    else:
        instances, parts = await _form_instances(request, body, settings)
    if not instances:
        raise InvalidInput("no instance in the upload")
    if len(instances) > settings.max_instances_per_study:
        raise PayloadTooLarge("too many instances in one study", limit=settings.max_instances_per_study)
    for data in instances:
        if not ingest.looks_like_dicom(data):
            raise InvalidInput("not a DICOM Part 10 file (no DICM prefix)")
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return Upload(instances, digest.hexdigest())


async def _form_instances(
    request: Request, body: bytes, settings: GatewaySettings
) -> tuple[list[bytes], list[bytes]]:
    """multipart/form-data: DICOM ``file`` parts, or one ``image`` part with a ``metadata`` sidecar.

    Returns the instances and the parts as uploaded (a photograph before it is wrapped).
    """
    request._body = body  # let Starlette's form parser read the already bounded body
    try:
        form = await request.form(max_files=settings.max_instances_per_study + 1, max_fields=4)
    except SightlineError:
        raise
    except Exception as exc:
        raise InvalidInput("malformed multipart/form-data body") from exc
    instances: list[bytes] = []
    parts: list[bytes] = []
    files = [v for v in form.getlist("file") if not isinstance(v, str)]
    image = form.get("image")
    if files and image is not None:
        raise InvalidInput("send either DICOM 'file' parts or one 'image' part, not both")
    if image is not None:
        if isinstance(image, str):
            raise InvalidInput("'image' must be a file part")
        metadata = form.get("metadata")
        raw = (
            (await metadata.read())
            if metadata is not None and not isinstance(metadata, str)
            else (metadata or "")
        )
        sidecar = ingest.parse_sidecar(raw.encode() if isinstance(raw, str) else raw)
        data = await image.read()
        parts = [data, raw.encode() if isinstance(raw, str) else raw]
        instances = [
            await asyncio.to_thread(ingest.wrap_photo, data, ingest.media_type(image.content_type), sidecar)
        ]
    else:
        for f in files:
            if ingest.media_type(f.content_type) not in (ingest.DICOM, "application/octet-stream"):
                raise UnsupportedMediaType("'file' parts must be application/dicom")
            instances.append(await f.read())
        parts = instances
    await form.close()
    return instances, parts
