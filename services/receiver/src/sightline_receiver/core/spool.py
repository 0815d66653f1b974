"""The durable spool: every instance the receiver acknowledges is on disk, sealed, until its study is settled.

Layout (directory and file names are hashes of UIDs, never the UIDs; tenants are names, not
patient data)::

    <spool_dir>/lock                               flock'd by the one receiver using it
    <spool_dir>/studies/<tenant>/<ref(StudyInstanceUID)>/<ref(SOPInstanceUID)>.dcm.sealed
    <spool_dir>/quarantine/<tenant>/<ref(...)>/    files that did not open; studies past the max age

A write goes to a temporary name in the study's directory, is fsync'd, renamed into place, and the
directory fsync'd: a file under its final name is whole and survives a crash or a power cut.
Directories are created 0700 and files 0600. Quarantined files stay sealed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sightline_common.http import TENANT_PATTERN

from sightline_receiver.core.instances import ids_of
from sightline_receiver.core.refusals import Refused, ref
from sightline_receiver.core.sealing import Sealer, Unreadable

log = logging.getLogger(__name__)

SUFFIX = ".dcm.sealed"
_NAME = re.compile(r"^[0-9a-f]{12}\.dcm\.sealed$")
_REF = re.compile(r"^[0-9a-f]{12}$")
_TENANT = re.compile(TENANT_PATTERN)
_PARTIAL = ".incoming-"
_PLACE = b"sightline-receiver-spool/v1\x00"


class SpoolError(Exception):
    """The spool could not do what was asked; ``reason`` names the error, never a path or value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SpooledStudy:
    """A study read back from the spool: its instances' sizes, and when its oldest file was written."""

    tenant: str
    study_uid: str
    sizes: dict[str, int]
    spooled_at: float


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Spool.open` found: studies to deliver, files quarantined, interrupted writes dropped."""

    studies: list[SpooledStudy]
    quarantined: int
    partial: int


class Spool:
    """Sealed instances on disk, by tenant and hashed study and instance UID. Thread-safe."""

    def __init__(self, root: Path, sealer: Sealer) -> None:
        self.root = root
        self.sealer = sealer
        self._studies = root / "studies"
        self._quarantine = root / "quarantine"
        self._lock = threading.Lock()
        #: study directory -> file name -> bytes on disk (the gauges; no walk of the tree per tick).
        self._index: dict[Path, dict[str, int]] = {}
        self._lock_fd: int | None = None

    # --- start and stop ---

    def open(self) -> Recovery:
        """Take the spool (one receiver per directory) and read back what it holds.

        Raises :class:`SpoolError` when another process holds it or it cannot be created.
        """
        try:
            _mkdir(self.root, parents=True)
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolError("spool directory in use by another receiver") from None
            self._lock_fd = fd
            _mkdir(self._studies)
            _mkdir(self._quarantine)
            return self._scan()
        except OSError as exc:
            raise SpoolError(f"spool directory unusable ({_name(exc)})") from None

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    @property
    def writable(self) -> bool:
        """Held by this process, and its directory still one we may write in (readiness)."""
        held = self._lock_fd is not None
        return held and self._studies.is_dir() and os.access(self._studies, os.W_OK | os.X_OK)

    # --- instances ---

    def write(self, tenant: str, study_uid: str, sop_uid: str, data: bytes) -> None:
        """Store one instance durably (see the module docstring); :class:`SpoolError` when it is not."""
        directory, name = self._dir(tenant, study_uid), _file(sop_uid)
        blob = self.sealer.seal(data, _place(tenant, directory.name, name))
        try:
            _mkdir(directory.parent)
            _mkdir(directory)
            fd, partial = tempfile.mkstemp(prefix=_PARTIAL, dir=directory)  # mode 0600
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(partial, directory / name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
                raise
            _fsync_dir(directory)
        except OSError as exc:
            raise SpoolError(f"spool write failed ({_name(exc)})") from None
        with self._lock:
            self._index.setdefault(directory, {})[name] = len(blob)

    def read(self, tenant: str, study_uid: str, sop_uid: str) -> bytes:
        """One spooled instance; :class:`Unreadable` when it does not open, OSError when it cannot be read."""
        directory, name = self._dir(tenant, study_uid), _file(sop_uid)
        return self.sealer.open((directory / name).read_bytes(), _place(tenant, directory.name, name))

    def remove(self, tenant: str, study_uid: str, sop_uids: list[str], *, prune: bool) -> None:
        """Delete instances (their study was settled); ``prune``: also the study's directory when empty."""
        directory = self._dir(tenant, study_uid)
        try:
            for sop_uid in sop_uids:
                (directory / _file(sop_uid)).unlink(missing_ok=True)
            if sop_uids and directory.is_dir():
                _fsync_dir(directory)
        except OSError as exc:
            raise SpoolError(f"spool delete failed ({_name(exc)})") from None
        self._forget(directory, [_file(s) for s in sop_uids], prune=prune)

    def quarantine(self, tenant: str, study_uid: str, sop_uids: list[str], *, prune: bool) -> int:
        """Move instances to the quarantine folder (still sealed); the number moved."""
        directory = self._dir(tenant, study_uid)
        names = [_file(s) for s in sop_uids]
        moved = 0
        try:
            for name in names:
                if (directory / name).exists():
                    self._move_to_quarantine(directory / name)
                    moved += 1
        except OSError as exc:
            raise SpoolError(f"spool quarantine failed ({_name(exc)})") from None
        self._forget(directory, names, prune=prune)
        return moved

    def spooled_at(self, tenant: str, study_uid: str) -> float | None:
        """When the study's oldest spooled file was written (wall clock), or None when none is left."""
        directory = self._dir(tenant, study_uid)
        with self._lock:
            names = list(self._index.get(directory, {}))
        times = []
        for name in names:
            with contextlib.suppress(OSError):
                times.append((directory / name).stat().st_mtime)
        return min(times, default=None)

    def usage(self) -> tuple[int, int]:
        """(studies, bytes on disk) in the spool, quarantine excluded."""
        with self._lock:
            return len(self._index), sum(sum(files.values()) for files in self._index.values())

    # --- internals ---

    def _dir(self, tenant: str, study_uid: str) -> Path:
        return self._studies / tenant / ref(study_uid)

    def _forget(self, directory: Path, names: list[str], *, prune: bool) -> None:
        with self._lock:
            files = self._index.get(directory, {})
            for name in names:
                files.pop(name, None)
            if not files:
                self._index.pop(directory, None)
        if prune:
            with contextlib.suppress(OSError):  # not empty (a new instance), or already gone
                directory.rmdir()
                _fsync_dir(directory.parent)

    def _move_to_quarantine(self, path: Path) -> None:
        target = self._quarantine / path.relative_to(self._studies)
        for level in reversed(target.relative_to(self._quarantine).parents[:-1]):
            _mkdir(self._quarantine / level)
        n = 0
        while target.exists():  # quarantined before (e.g. the same instance resent, then undeliverable)
            n += 1
            target = target.with_name(f"{path.name}.{n}")
        os.replace(path, target)
        _fsync_dir(target.parent)
        _fsync_dir(path.parent)

    def _scan(self) -> Recovery:
        studies: list[SpooledStudy] = []
        quarantined = partial = 0
        for tenant_dir in sorted(self._studies.iterdir()):
            for study_dir in sorted(tenant_dir.iterdir()) if tenant_dir.is_dir() else [tenant_dir]:
                if not study_dir.is_dir() or study_dir.parent != tenant_dir:
                    shown = _shown(study_dir, self._studies)
                    log.error("spool entry %s quarantined: not a study directory", shown)
                    self._move_to_quarantine(study_dir)
                    quarantined += 1
                    continue
                found, q, p = self._scan_study(tenant_dir.name, study_dir)
                quarantined, partial = quarantined + q, partial + p
                if found is not None:
                    studies.append(found)
                else:
                    with contextlib.suppress(OSError):
                        study_dir.rmdir()
        return Recovery(studies, quarantined, partial)

    def _scan_study(self, tenant: str, directory: Path) -> tuple[SpooledStudy | None, int, int]:
        """(the study, files quarantined, interrupted writes removed) of one study directory."""
        sizes: dict[str, int] = {}
        study_uid, oldest, quarantined, partial = "", float("inf"), 0, 0
        for path in sorted(directory.iterdir()):
            if path.name.startswith(_PARTIAL):
                path.unlink()  # a write a crash interrupted: never acknowledged
                partial += 1
                continue
            try:
                if not _NAME.match(path.name) or not path.is_file():
                    raise Unreadable("not a spool file")
                blob = path.read_bytes()
                part10 = self.sealer.open(blob, _place(tenant, directory.name, path.name))
                ids = ids_of(part10)
                if ref(ids.study_uid) != directory.name or _file(ids.sop_instance_uid) != path.name:
                    raise Unreadable("filed under another study or instance")
            except (Unreadable, Refused, OSError) as exc:
                reason = _name(exc) if isinstance(exc, OSError) else str(exc)
                log.error("spooled file %s quarantined: %s", _shown(path, self._studies), reason)
                self._move_to_quarantine(path)
                quarantined += 1
                continue
            study_uid = ids.study_uid
            sizes[ids.sop_instance_uid] = len(part10)
            oldest = min(oldest, path.stat().st_mtime)
            with self._lock:
                self._index.setdefault(directory, {})[path.name] = len(blob)
        if not sizes:
            return None, quarantined, partial
        return SpooledStudy(tenant, study_uid, sizes, oldest), quarantined, partial


def _shown(path: Path, root: Path) -> str:
    """A spool path for logs: tenant and hashes; an entry we did not name is not shown (it may be a UID)."""
    parts = path.relative_to(root).parts
    if len(parts) == 3 and _TENANT.match(parts[0]) and _REF.match(parts[1]) and _NAME.match(parts[2]):
        return "/".join(parts)
    return "an unexpected entry"


def _file(sop_uid: str) -> str:
    return f"{ref(sop_uid)}{SUFFIX}"


def _place(tenant: str, study_ref: str, name: str) -> bytes:
    """The associated data of a sealed file: where it is filed (tenant, hashed study and instance)."""
    return _PLACE + f"{tenant}/{study_ref}/{name}".encode()


def _mkdir(path: Path, *, parents: bool = False) -> None:
    """Create a 0700 directory, fsyncing its parent so that the new entry is durable."""
    try:
        path.mkdir(mode=0o700, parents=parents)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _name(exc: OSError) -> str:
    """An OS error as its errno name (ENOSPC, EACCES...): no path in it."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
