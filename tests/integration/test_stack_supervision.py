"""A component of a running stack that is SIGKILLed comes back by itself, and says so in status.

The stack here is Triton, preprocess and deid (no Ray Serve: the supervisor treats every
component alike and explain alone costs ~30 s and ~2 GB); the supervisor runs in a thread as
`sightline up` runs it in its main loop. `sightline status` and `sightline restart` run as the
user runs them, in another process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sightline.stack import (
    RestartPolicy,
    Stack,
    StackState,
    Supervisor,
    http_ok,
    kill_component,
    settings_on_free_ports,
    tagged_processes,
)
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = settings_on_free_ports(
        tmp_path_factory.mktemp("supervised"), model_repository=REPO / "model_repository", ready_timeout_s=180
    )
    stack = Stack(settings)
    state = stack.start(only=["triton", "preprocess", "deid"])
    stop = threading.Event()
    supervisor = Supervisor(stack, state, RestartPolicy(initial_s=1, cap_s=10))
    thread = threading.Thread(target=supervisor.run, args=(stop.wait, 0.2), daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        stop.set()
        thread.join(timeout=30)
        stack.stop(supervisor.state)
        assert tagged_processes(state.stack_id) == []


def component(stack: Stack, name: str) -> dict[str, object]:
    return next(r for r in stack.status() if r["name"] == name)


def wait_ready_again(stack: Stack, name: str, old_pid: object, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        row = component(stack, name)
        if row["pid"] not in (None, old_pid) and row["ready"]:
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"{name} not back within {timeout_s}s: {component(stack, name)}")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sightline.cli", *args, "--data-dir", str(stack.settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "COLUMNS": "250"},
        cwd=REPO,
    )


def test_a_sigkilled_component_comes_back_and_status_shows_the_restart(supervised: Stack) -> None:
    stack = supervised
    before = component(stack, "preprocess")
    kill_component(stack.settings, "preprocess")
    took = wait_ready_again(stack, "preprocess", before["pid"], timeout_s=120)
    print(f"preprocess back and ready {took:.1f}s after SIGKILL")
    row = component(stack, "preprocess")
    assert row["restarts"] == 1
    out = cli(stack, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if "preprocess" in x)
    assert "SIGKILL" in line and " 1 " in line, out.stdout


def test_sightline_restart_restarts_one_component_through_the_supervisor(supervised: Stack) -> None:
    stack = supervised
    before = component(stack, "deid")
    untouched = component(stack, "triton")["pid"]
    out = cli(stack, "restart", "deid")
    assert out.returncode == 0, out.stdout + out.stderr
    after = component(stack, "deid")
    assert after["pid"] != before["pid"] and after["ready"]
    assert after["restarts"] == int(str(before["restarts"])) + 1
    assert component(stack, "triton")["pid"] == untouched
    assert http_ok(
        next(c for c in StackState.load(stack.settings.state_file).components if c.name == "deid").ready_url
    )


def test_restarting_an_unknown_component_says_which_exist(supervised: Stack) -> None:
    out = cli(supervised, "restart", "nosuch")
    assert out.returncode == 2 and "deid" in out.stdout
