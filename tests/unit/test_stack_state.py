"""The state file stays whole and loses no component when several threads restart at once.

CI once failed eight chaos cases on one run: two components restarted together (two threads of one
process) wrote the state file through one shared temporary name, and left ``...}}`` behind.
"""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

from sightline.stack import Component, StackState
from sightline.stack.state import state_lock

THREADS, ROUNDS = 6, 40


def a_state(names: list[str]) -> StackState:
    stack_id = secrets.token_hex(8)
    comps = [Component(n, ["true"], "http://127.0.0.1:9/", {}) for n in names]
    return StackState(stack_id, f"sightline_{stack_id}_", comps)


def run_together(work: list[threading.Thread]) -> None:
    for t in work:
        t.start()
    for t in work:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer hung"


def test_saves_from_many_threads_at_once_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    names = [f"c{i}" for i in range(THREADS)]
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(ROUNDS):
                a_state(names).save(path)
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    run_together([threading.Thread(target=writer) for _ in range(THREADS)])
    assert errors == []
    assert [c.name for c in StackState.load(path).components] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.json"], "temporary files left behind"


def test_concurrent_restarts_under_the_lock_keep_every_components_update(tmp_path: Path) -> None:
    """Each thread restarts its own component ROUNDS times; no restart count may be lost."""
    path = tmp_path / "stack.json"
    names = [f"c{i}" for i in range(THREADS)]
    a_state(names).save(path)

    def restarts(name: str) -> None:
        for _ in range(ROUNDS):
            with state_lock(path):
                state = StackState.load(path)
                comp = next(c for c in state.components if c.name == name)
                comp.restarts += 1
                state.save(path)

    run_together([threading.Thread(target=restarts, args=(n,)) for n in names])
    assert {c.name: c.restarts for c in StackState.load(path).components} == dict.fromkeys(names, ROUNDS)
