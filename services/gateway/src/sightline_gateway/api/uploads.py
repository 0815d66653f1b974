"""Reading an upload (DICOM, multipart/related, or a form with files or a photograph) into instances."""

from __future__ import annotations

import asyncio

from fastapi import Request
from sightline_common.errors import InvalidInput, PayloadTooLarge, SightlineError, UnsupportedMediaType
from sightline_common.http import read_body

from sightline_gateway.core import ingest
from sightline_gateway.settings import GatewaySettings


async def read_instances(request: Request, settings: GatewaySettings) -> list[bytes]:
    """The upload as identified DICOM instances (photographs wrapped), in memory only."""
    kind = ingest.classify(request.headers.get("content-type"))
    body = await read_body(request, settings.max_upload_bytes)
    if not body:
        raise InvalidInput("empty body")
    instances: list[bytes] = []
    if kind == "dicom":
        instances = [body]
    elif kind == "multipart-related":
        for part_type, data in ingest.split_multipart_related(request.headers["content-type"], body):
            if part_type != ingest.DICOM:
                raise UnsupportedMediaType("multipart/related parts must be application/dicom")
            instances.append(data)
    else:
        instances = await _form_instances(request, body, settings)
    if not instances:
        raise InvalidInput("no instance in the upload")
    if len(instances) > settings.max_instances_per_study:
        raise PayloadTooLarge("too many instances in one study", limit=settings.max_instances_per_study)
    for data in instances:
        if not ingest.looks_like_dicom(data):
            raise InvalidInput("not a DICOM Part 10 file (no DICM prefix)")
    return instances


async def _form_instances(request: Request, body: bytes, settings: GatewaySettings) -> list[bytes]:
    """multipart/form-data: DICOM ``file`` parts, or one ``image`` part with a ``metadata`` sidecar."""
    request._body = body  # let Starlette's form parser read the already bounded body
    try:
        form = await request.form(max_files=settings.max_instances_per_study + 1, max_fields=4)
    except SightlineError:
        raise
    except Exception as exc:
        raise InvalidInput("malformed multipart/form-data body") from exc
    instances: list[bytes] = []
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
        instances = [
            await asyncio.to_thread(ingest.wrap_photo, data, ingest.media_type(image.content_type), sidecar)
        ]
    else:
        for f in files:
            if ingest.media_type(f.content_type) not in (ingest.DICOM, "application/octet-stream"):
                raise UnsupportedMediaType("'file' parts must be application/dicom")
            instances.append(await f.read())
    await form.close()
    return instances
