"""What the stack runs (components) and what it started (the state file under the data directory)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExitRecord:
    """How a component's process ended: its exit code or the signal that killed it, and when."""

    code: int | None
    signal: str | None
    at: float
    reason: str = "exited"

    @classmethod
    def from_returncode(cls, returncode: int | None, at: float, reason: str = "exited") -> ExitRecord:
        """From ``Popen.returncode`` (negative: killed by that signal; None: not our child, unknown)."""
        if returncode is not None and returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return cls(None, name, at, reason)
        return cls(returncode, None, at, reason)

    def describe(self) -> str:
        what = self.signal or (f"exit {self.code}" if self.code is not None else "exit status unknown")
        return what if self.reason == "exited" else f"{what} ({self.reason})"


@dataclass
class Component:
    """One process of the stack, how to tell that it is ready, and its restarts so far."""

    name: str
    command: list[str]
    ready_url: str
    listens: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    last_exit: ExitRecord | None = None
    #: While down: when the supervisor starts it again (epoch seconds).
    restart_at: float | None = None


@dataclass
class StackState:
    """The running stack: its id (tagged in every process's environment) and its components."""

    stack_id: str
    shm_prefix: str
    components: list[Component]
    #: The process that restarts components that exit (``sightline up``), if one runs.
    supervisor_pid: int | None = None

    def save(self, path: Path) -> None:
        """Write atomically: ``sightline status`` reads the file while the supervisor rewrites it."""
        body = json.dumps(asdict(self) | {"components": [_public(c) for c in self.components]}, indent=2)
        # A temporary file of its own per save: two threads of one process (two restarts at once)
        # sharing one name wrote into each other's file and left invalid JSON behind.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> StackState:
        raw = json.loads(path.read_text())
        comps = [_component(c) for c in raw["components"]]
        return cls(raw["stack_id"], raw["shm_prefix"], comps, raw.get("supervisor_pid"))


@contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """One read-modify-write of the state file at a time, across threads and processes.

    Two restarts at once each loaded the file, changed their own component and saved: the later
    save put back the other's old, dead pid, and the process it had started was lost to ``down``.
    """
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _component(raw: dict[str, Any]) -> Component:
    last = raw.get("last_exit")
    return Component(**(raw | {"last_exit": ExitRecord(**last) if last else None}))


def _public(c: Component) -> dict[str, object]:
    """A component without its environment (which holds secrets) for the state file."""
    d = asdict(c)
    d["env"] = {}
    return d
