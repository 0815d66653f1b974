"""`sightline up` keeps components running: restart delays, exit records, restart requests.

The policy is the kubelet's CrashLoopBackOff on one machine. The supervisor is tested on tiny
real processes (``sleep`` stand-ins for services) with a fake clock, so the delays are exact and
the test takes a second.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sightline.stack import (
    Backoff,
    Component,
    ExitRecord,
    RestartPolicy,
    Stack,
    StackState,
    Supervisor,
    settings_on_free_ports,
)
from sightline.stack.processes import alive
from sightline.stack.watch import requests_dir


def test_delays_double_from_the_initial_delay_up_to_the_cap() -> None:
    policy = RestartPolicy(initial_s=1, factor=2, cap_s=10, reset_after_s=60)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_a_long_crash_loop_stays_at_the_cap() -> None:
    assert RestartPolicy(cap_s=60).delay(10_000) == 60


def test_a_crash_loop_backs_off_and_a_healthy_run_resets_the_delay() -> None:
    backoff = Backoff(RestartPolicy(initial_s=1, factor=2, cap_s=30, reset_after_s=120))
    assert [backoff.on_exit(ran_for_s=0.5) for _ in range(4)] == [1, 2, 4, 8]
    # Ran healthily for longer than reset_after_s: the next crash restarts at once again.
    assert backoff.on_exit(ran_for_s=300) == 1
    assert backoff.on_exit(ran_for_s=1) == 2


@pytest.mark.parametrize(
    "values",
    [
        {"initial_s": 0},
        {"initial_s": 5, "cap_s": 1},
        {"factor": 0.5},
        {"reset_after_s": 0},
    ],
)
def test_an_unsafe_policy_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**values)


def test_exit_record_names_the_signal_or_the_code() -> None:
    assert ExitRecord.from_returncode(-9, at=0).describe() == "SIGKILL"
    assert ExitRecord.from_returncode(3, at=0).describe() == "exit 3"
    assert ExitRecord.from_returncode(None, at=0, reason="restart requested").describe() == (
        "exit status unknown (restart requested)"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def stand_in(name: str, code: str = "import time; time.sleep(120)") -> Component:
    return Component(name, [sys.executable, "-c", code], "http://127.0.0.1:9/unused", {})


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, Clock]]:
    stack = Stack(settings_on_free_ports(tmp_path))
    stack.logs.mkdir(parents=True)
    planned = [stand_in("deid"), stand_in("crasher", "raise SystemExit(3)")]
    stack_id = secrets.token_hex(8)
    state = StackState(stack_id, f"sightline_{stack_id}_", [])
    for comp in planned:
        running = Component(comp.name, comp.command, comp.ready_url, comp.listens)
        stack.spawn(running, state)
        state.components.append(running)
    state.save(stack.settings.state_file)
    clock = Clock()
    policy = RestartPolicy(initial_s=1, factor=2, cap_s=4, reset_after_s=100)
    supervisor = Supervisor(stack, state, policy, clock=clock, planned=planned)
    try:
        yield supervisor, clock
    finally:
        stack.stop(state, grace_s=2)


def component(supervisor: Supervisor, name: str) -> Component:
    return next(c for c in supervisor.state.components if c.name == name)


def wait_dead(pid: int | None) -> None:
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_killed_component_is_restarted_after_its_delay_and_status_shows_it(
    supervised: tuple[Supervisor, Clock],
) -> None:
    supervisor, clock = supervised
    deid = component(supervisor, "deid")
    first_pid = deid.pid
    assert first_pid is not None
    os.killpg(first_pid, signal.SIGKILL)
    wait_dead(first_pid)

    supervisor.tick()
    assert deid.pid is None and deid.last_exit is not None
    assert deid.last_exit.signal == "SIGKILL" and deid.last_exit.at == clock.now
    assert deid.restart_at == clock.now + 1

    clock.now += 0.5
    supervisor.tick()
    assert deid.pid is None, "restarted before its delay"
    clock.now += 0.5
    supervisor.tick()
    assert alive(deid.pid) and deid.pid != first_pid and deid.restarts == 1

    rows = {r["name"]: r for r in supervisor.stack.status()}
    assert rows["deid"]["restarts"] == 1 and rows["deid"]["alive"]
    last = rows["deid"]["last_exit"]
    assert isinstance(last, ExitRecord) and last.signal == "SIGKILL"


def test_a_crash_loop_waits_longer_each_time_up_to_the_cap(supervised: tuple[Supervisor, Clock]) -> None:
    supervisor, clock = supervised
    crasher = component(supervisor, "crasher")
    delays = []
    for _ in range(4):
        wait_dead(crasher.pid)
        supervisor.tick()
        assert crasher.last_exit is not None and crasher.last_exit.code == 3
        assert crasher.restart_at is not None
        delays.append(crasher.restart_at - clock.now)
        clock.now = crasher.restart_at
        supervisor.tick()
    assert delays == [1, 2, 4, 4]
    assert crasher.restarts == 4


def test_a_restart_request_restarts_at_once_without_backoff(supervised: tuple[Supervisor, Clock]) -> None:
    supervisor, _ = supervised
    deid = component(supervisor, "deid")
    before = deid.pid
    folder = requests_dir(supervisor.stack)
    folder.mkdir()
    (folder / "deid").touch()
    supervisor.tick()
    assert alive(deid.pid) and deid.pid != before and not alive(before)
    assert deid.restarts == 1 and deid.last_exit is not None
    assert deid.last_exit.reason == "restart requested" and deid.last_exit.signal == "SIGTERM"
    assert not list(folder.iterdir()), "a request is served once"
    saved = StackState.load(supervisor.stack.settings.state_file)
    assert next(c for c in saved.components if c.name == "deid").pid == deid.pid
