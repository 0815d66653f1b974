"""Start, watch and stop the planned components of the local stack.

Each component runs in its own process group, tagged with the stack id in its environment, so
that stopping finds every descendant (Ray starts its own daemons) and leaves no orphan and no
shared-memory file behind.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sightline.stack.plan import plan
from sightline.stack.processes import STACK_ENV, adopt, alive, http_ok, reap, shm_files, tagged_processes
from sightline.stack.settings import StackSettings
from sightline.stack.state import Component, StackState, state_lock

Progress = Callable[[str, str], None]


def _no_progress(name: str, status: str) -> None:
    return None


class Stack:
    """Start, watch and stop the local stack."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.logs = settings.data_dir / "logs"

    def running_state(self) -> StackState | None:
        path = self.settings.state_file
        if not path.exists():
            return None
        state = StackState.load(path)
        return state if any(alive(c.pid) for c in state.components) else None

    def start(
        self,
        on_progress: Progress = _no_progress,
        only: Iterable[str] | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> StackState:
        """Start every component and wait for each to be ready; stop all on failure.

        ``env``: extra environment by component name, over the plan's (a benchmark trying a
        service setting that the stack's own settings do not carry).
        """
        if self.running_state() is not None:
            raise RuntimeError(f"a stack is already running from {self.settings.data_dir} (sightline down)")
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        stack_id = secrets.token_hex(8)
        state = StackState(stack_id, f"sightline_{stack_id}_", [])
        wanted = set(only) if only else None
        components = [c for c in plan(self.settings, state.shm_prefix) if not wanted or c.name in wanted]
        for comp in components:
            comp.env.update((env or {}).get(comp.name, {}))
        try:
            for comp in components:
                self.spawn(comp, state)
                state.components.append(comp)
                state.save(self.settings.state_file)
                on_progress(comp.name, "starting")
                self.wait_ready(comp, on_progress)
                on_progress(comp.name, "ready")
        except BaseException:
            self.stop(state)
            raise
        return state

    def spawn(self, comp: Component, state: StackState) -> None:
        """Start ``comp`` in a new session, tagged with the stack id, logging under ``logs/``."""
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
        # PYTHONPATH: the children import the same code as this process (a checkout under test).
        for key in ("PYDICOM_DATA_DIR", "TMPDIR", "PYTHONPATH"):
            if key in os.environ:
                env[key] = os.environ[key]
        if "PYTHONPATH" in env:  # the children run in the data directory
            env["PYTHONPATH"] = os.pathsep.join(
                str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep)
            )
        env.update(comp.env)
        if comp.name != "triton":
            env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))
        env[STACK_ENV] = state.stack_id
        log = (self.logs / f"{comp.name}.log").open("ab")
        proc = subprocess.Popen(
            comp.command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.settings.data_dir,
        )
        log.close()
        adopt(proc)
        comp.pid, comp.started_at, comp.restart_at = proc.pid, time.time(), None

    def wait_ready(self, comp: Component, on_progress: Progress = _no_progress) -> None:
        """Return once ``comp`` answers its readiness URL; raise if it exits or times out."""
        deadline = time.monotonic() + self.settings.ready_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not alive(comp.pid):
                raise RuntimeError(
                    f"{comp.name} exited during start-up; see {self.logs / (comp.name + '.log')}"
                )
            if http_ok(comp.ready_url):
                return
            on_progress(comp.name, f"waiting {time.monotonic() - started:.0f}s")
            time.sleep(0.5)
        raise RuntimeError(f"{comp.name} not ready after {self.settings.ready_timeout_s:.0f}s")

    def stop(self, state: StackState | None = None, grace_s: float = 20.0) -> list[str]:
        """Stop every process of the stack (reverse order), then its descendants and shm files."""
        state = state or (
            StackState.load(self.settings.state_file) if self.settings.state_file.exists() else None
        )
        if state is None:
            return []
        stopped = [c.name for c in state.components if alive(c.pid)]
        if _stop_supervisor(state.supervisor_pid, grace_s * 3):
            # It stopped the stack itself (`sightline up` stops everything on SIGTERM).
            if not self.settings.state_file.exists():
                return stopped
            state = StackState.load(self.settings.state_file)
        stopped = []
        for comp in reversed(state.components):
            if comp.pid is not None and alive(comp.pid):
                try:
                    os.killpg(comp.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + grace_s
                while alive(comp.pid) and time.monotonic() < deadline:
                    reap(comp.pid)
                    time.sleep(0.2)
                if alive(comp.pid):
                    os.killpg(comp.pid, signal.SIGKILL)
                reap(comp.pid)
                stopped.append(comp.name)
        # Whatever escaped its process group (Ray daemons, python stubs) carries the stack id.
        deadline = time.monotonic() + 10
        while (left := tagged_processes(state.stack_id)) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 5 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
                reap(pid)
            time.sleep(0.3)
        for path in shm_files(state.shm_prefix):
            path.unlink(missing_ok=True)
        self.settings.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[dict[str, object]]:
        """Each started component: pid, whether it runs and is ready, addresses, restarts, last exit."""
        if not self.settings.state_file.exists():
            return []
        state = StackState.load(self.settings.state_file)
        supervised = state.supervisor_pid is not None and alive(state.supervisor_pid)
        return [
            {
                "name": c.name,
                "pid": c.pid,
                "alive": alive(c.pid),
                "ready": alive(c.pid) and http_ok(c.ready_url),
                "listens": c.listens,
                "restarts": c.restarts,
                "last_exit": c.last_exit,
                "restart_at": c.restart_at if supervised else None,
                "supervised": supervised,
            }
            for c in state.components
        ]


def _stop_supervisor(pid: int | None, timeout_s: float) -> bool:
    """SIGTERM another process's supervisor (so it restarts nothing) and wait for it to exit."""
    if pid is None or pid == os.getpid() or not alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.2)
    return not alive(pid)


def kill_component(settings: StackSettings, name: str) -> None:
    """Kill one component abruptly (SIGKILL to its process group), as a crash would."""
    state = StackState.load(settings.state_file)
    comp = next(c for c in state.components if c.name == name)
    if comp.pid is not None and alive(comp.pid):
        os.killpg(comp.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(comp.pid) and time.monotonic() < deadline:
            reap(comp.pid)
            time.sleep(0.1)


def restart_component(stack: Stack, name: str) -> None:
    """Start one component again with its planned command (after a crash) and wait for it."""
    with state_lock(stack.settings.state_file):
        state = StackState.load(stack.settings.state_file)
        fresh = {c.name: c for c in plan(stack.settings, state.shm_prefix)}[name]
        i = next((i for i, c in enumerate(state.components) if c.name == name), None)
        if i is None:
            raise KeyError(name)
        if alive(state.components[i].pid):
            raise RuntimeError(f"{name} is still running")
        fresh.restarts, fresh.last_exit = state.components[i].restarts + 1, state.components[i].last_exit
        stack.spawn(fresh, state)
        state.components[i] = fresh
        state.save(stack.settings.state_file)
    stack.wait_ready(fresh)
