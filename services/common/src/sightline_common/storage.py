"""Object storage behind one small interface: S3 API (MinIO in a cluster) or a local directory.

Only de-identified images, heatmaps and exported reports are ever stored. Keys are opaque
(study and artifact ids), never names or identifiers from a study.
"""

from __future__ import annotations

import io
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sightline_common.errors import InvalidInput, NotFound

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,511}$")


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise InvalidInput("invalid object key")
    return key


class ObjectStore(Protocol):
    """What the services need from object storage."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[tuple[str, datetime]]: ...

    def ready(self) -> bool: ...


class LocalDirStore:
    """Objects as files under one directory (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFound("object not found")
        return path.read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[tuple[str, datetime]]:
        out = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.endswith(".part"):
                key = str(path.relative_to(self.root))
                if key.startswith(prefix):
                    out.append((key, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
        return sorted(out)

    def ready(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)


class S3Store:
    """An S3 API bucket through the ``minio`` client (MinIO, or any S3-compatible server)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
    ) -> None:
        from minio import Minio

        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(
            self.bucket, check_key(key), io.BytesIO(data), len(data), content_type=content_type
        )

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, check_key(key))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound("object not found") from exc
            raise
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, check_key(key))

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, check_key(key))
            return True
        except S3Error:
            return False

    def list(self, prefix: str = "") -> list[tuple[str, datetime]]:
        return sorted(
            (o.object_name, o.last_modified or datetime.now(UTC))
            for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if o.object_name
        )

    def presigned_get(self, key: str, expires: timedelta) -> str:
        return str(self.client.presigned_get_object(self.bucket, check_key(key), expires=expires))

    def ready(self) -> bool:
        try:
            return bool(self.client.bucket_exists(self.bucket))
        except Exception:  # noqa: BLE001 - unreachable storage is "not ready"
            return False


def store_from_settings(
    *,
    local_dir: Path | None,
    s3_endpoint: str | None,
    s3_access_key: str | None,
    s3_secret_key: str | None,
    s3_bucket: str,
    s3_secure: bool,
) -> ObjectStore:
    """The S3 store when an endpoint is configured, else the local directory."""
    if s3_endpoint:
        if not (s3_access_key and s3_secret_key):
            raise ValueError("S3 endpoint configured without access and secret keys")
        store = S3Store(s3_endpoint, s3_access_key, s3_secret_key, s3_bucket, secure=s3_secure)
        return store
    if local_dir is None:
        raise ValueError("configure either an S3 endpoint or a local storage directory")
    return LocalDirStore(local_dir)
