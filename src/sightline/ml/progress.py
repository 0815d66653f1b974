"""Progress of long evaluation steps (decoding, inference, bootstrap), reported to whoever shows it.

The library calls ``task(description, total)`` and then the returned ``advance(n)``; the command
line shows a rich progress bar, tests and library callers pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]


class Tracker(Protocol):
    """Something that shows progress: one task per long step."""

    def task(self, description: str, total: int) -> Advance: ...


class Silent:
    """No progress shown."""

    def task(self, description: str, total: int) -> Advance:
        return lambda n: None


class RichTracker:
    """A rich progress bar per step, on the given console."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def task(self, description: str, total: int) -> Advance:
        task_id = self._progress.add_task(description, total=total)

        def advance(n: int) -> None:
            self._progress.advance(task_id, n)

        return advance


@contextmanager
def rich_tracker(console: Console) -> Iterator[RichTracker]:
    """Progress bars for the duration of the block (left on screen when done)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        yield RichTracker(progress)
