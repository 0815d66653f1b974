"""One section of the GPU suite in a fresh (spawned) process under a timeout.

Spawned, not forked: CUDA cannot be used in a forked child of a process that touched it, and a
section that hangs (a TensorRT engine build, a stuck server call) is killed without losing the
sections before it. Lives outside ``__main__``, which spawned children cannot import.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable
from typing import Any


def _child(fn: Callable[[dict[str, Any]], dict[str, Any]], plan: dict[str, Any], conn: Any) -> None:
    try:
        conn.send(("ok", fn(plan)))
    except BaseException:  # noqa: BLE001  (anything a section raises is its result)
        conn.send(("error", traceback.format_exc()[-3000:]))
    finally:
        conn.close()


def run_section(
    name: str, fn: Callable[[dict[str, Any]], dict[str, Any]], plan: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """``fn(plan)`` in a fresh (spawned) process; its result, or ``{"error": ...}``."""
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, plan, writer), name=f"gpu-suite-{name}")
    started = time.monotonic()
    proc.start()
    writer.close()
    result: dict[str, Any]
    if reader.poll(max(1.0, timeout)):
        try:
            status, payload = reader.recv()
            result = payload if status == "ok" else {"error": payload}
        except EOFError:
            result = {"error": f"section process ended without a result (exit {proc.exitcode})"}
    else:
        result = {"error": f"timed out after {timeout:.0f} s"}
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(
        f"[gpu-suite] {name}: {'error' if 'error' in result else 'ok'} in {result['seconds']} s", flush=True
    )
    return result
