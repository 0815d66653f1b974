"""Processes of the stack on this machine: liveness, the stack-id tag, shared memory, readiness."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

#: Every process the stack starts carries ``SIGHTLINE_STACK_ID=<id>`` in its environment.
STACK_ENV = "SIGHTLINE_STACK_ID"


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def alive(pid: int | None) -> bool:
    """True when ``pid`` runs (a zombie counts as dead)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


#: Children this process started, so that whoever reaps one keeps its exit status for the supervisor
#: (subprocess would otherwise reap a dropped Popen itself and the status would be lost).
_children: dict[int, subprocess.Popen[bytes]] = {}
_returncodes: dict[int, int] = {}


def adopt(proc: subprocess.Popen[bytes]) -> None:
    """Keep ``proc`` so that its exit status can be read after it ends (:func:`take_returncode`)."""
    _children[proc.pid] = proc


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child and has exited."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _returncodes[pid] = proc.returncode
            _children.pop(pid, None)
        return
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if waited == pid:
        _returncodes[pid] = os.waitstatus_to_exitcode(status)


def take_returncode(pid: int) -> int | None:
    """How our child ``pid`` ended (negative: the signal); None when running or not our child."""
    reap(pid)
    return _returncodes.pop(pid, None)


def tagged_processes(stack_id: str) -> list[int]:
    """Every process whose environment carries this stack id (children, Ray daemons, stubs)."""
    needle = f"{STACK_ENV}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if alive(p)]


def shm_files(prefix: str) -> list[Path]:
    """Shared-memory files under /dev/shm whose names start with ``prefix``."""
    shm = Path("/dev/shm")
    return sorted(shm.glob(f"{prefix}*")) if shm.is_dir() else []
