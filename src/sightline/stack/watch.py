"""Keep the started stack running, as a kubelet keeps a pod's containers running.

A component whose process exits (crash, OOM kill, SIGKILL) is started again after the delay of
its :class:`~sightline.stack.backoff.Backoff`; its restart count and last exit (code or signal,
time) are written to the state file, where ``sightline status`` reads them. ``sightline restart
<component>`` asks the supervising process through a request file under the data directory, so
that only one process ever starts a component.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sightline.stack.backoff import Backoff, RestartPolicy
from sightline.stack.plan import plan
from sightline.stack.processes import alive, http_ok, reap, take_returncode
from sightline.stack.state import Component, ExitRecord, StackState, state_lock
from sightline.stack.supervisor import Stack, restart_component

log = logging.getLogger(__name__)

#: Called with the poll interval between ticks; True stops supervising.
Wait = Callable[[float], bool]


def requests_dir(stack: Stack) -> Path:
    return stack.settings.data_dir / "restart-requests"


class Supervisor:
    """Restart the stack's components that exit, with backoff; serve restart requests."""

    def __init__(
        self,
        stack: Stack,
        state: StackState,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.time,
        planned: list[Component] | None = None,
    ) -> None:
        self.stack, self.state, self.clock = stack, state, clock
        policy = policy or RestartPolicy()
        self.backoff = {c.name: Backoff(policy) for c in state.components}
        # Commands and environments come from the plan: a state file holds no secrets.
        self.planned = {c.name: c for c in planned or plan(stack.settings, state.shm_prefix)}

    def run(self, wait: Wait, interval_s: float = 0.5) -> None:
        """Supervise until ``wait`` says stop; the caller then stops the stack."""
        self.state.supervisor_pid = os.getpid()
        self._save()
        try:
            while not wait(interval_s):
                self.tick()
        finally:
            self.state.supervisor_pid = None
            if self.stack.settings.state_file.exists():
                self._save()

    def tick(self) -> None:
        """Notice exits, start what is due, serve restart requests."""
        changed = False
        for comp in self.state.components:
            if comp.pid is not None and not alive(comp.pid):
                self._exited(comp)
                changed = True
            if comp.pid is None and comp.restart_at is not None and self.clock() >= comp.restart_at:
                self._start(comp)
                changed = True
        changed = self._serve_requests() or changed
        if changed:
            self._save()

    def _exited(self, comp: Component) -> None:
        assert comp.pid is not None
        now = self.clock()
        comp.last_exit = ExitRecord.from_returncode(take_returncode(comp.pid), now)
        delay = self.backoff[comp.name].on_exit(now - (comp.started_at or now))
        comp.pid, comp.restart_at = None, now + delay
        log.warning("%s exited (%s); restarting in %.1fs", comp.name, comp.last_exit.describe(), delay)

    def _start(self, comp: Component) -> None:
        fresh = self.planned[comp.name]
        comp.command, comp.env = fresh.command, fresh.env
        self.stack.spawn(comp, self.state)
        comp.restarts += 1
        log.warning("%s started again (pid %s, restart %d)", comp.name, comp.pid, comp.restarts)

    def _serve_requests(self) -> bool:
        folder = requests_dir(self.stack)
        if not folder.is_dir():
            return False
        served = False
        for request in sorted(folder.iterdir()):
            request.unlink(missing_ok=True)
            comp = next((c for c in self.state.components if c.name == request.name), None)
            if comp is None:
                continue
            code = _terminate(comp.pid) if comp.pid is not None else None
            comp.last_exit = ExitRecord.from_returncode(code, self.clock(), reason="restart requested")
            comp.pid = None
            self._start(comp)
            served = True
        return served

    def _save(self) -> None:
        with state_lock(self.stack.settings.state_file):
            self.state.save(self.stack.settings.state_file)


def _terminate(pid: int, grace_s: float = 20.0) -> int | None:
    """SIGTERM the process group, SIGKILL after the grace period; its exit code if it was our child."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return take_returncode(pid)
    deadline = time.monotonic() + grace_s
    while alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.1)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while alive(pid):
            reap(pid)
            time.sleep(0.05)
    return take_returncode(pid)


def restart(stack: Stack, name: str, timeout_s: float | None = None) -> Component:
    """Restart one component and wait until it is ready again.

    Under a running supervisor the request goes to it (one process starts components); without
    one (``sightline up --detach``) the component is stopped and started from here.
    """
    state = StackState.load(stack.settings.state_file)
    comp = next((c for c in state.components if c.name == name), None)
    if comp is None:
        raise KeyError(f"no component {name!r} in this stack ({', '.join(c.name for c in state.components)})")
    if state.supervisor_pid is None or not alive(state.supervisor_pid):
        if comp.pid is not None and alive(comp.pid):
            _terminate(comp.pid)
        restart_component(stack, name)
        return next(c for c in StackState.load(stack.settings.state_file).components if c.name == name)
    folder = requests_dir(stack)
    folder.mkdir(exist_ok=True)
    (folder / name).touch()
    deadline = time.monotonic() + (timeout_s or stack.settings.ready_timeout_s)
    while time.monotonic() < deadline:
        now = next(c for c in StackState.load(stack.settings.state_file).components if c.name == name)
        if now.pid not in (None, comp.pid) and alive(now.pid) and http_ok(now.ready_url):
            return now
        time.sleep(0.5)
    raise RuntimeError(f"{name} not ready again within the timeout; see {stack.logs / (name + '.log')}")
