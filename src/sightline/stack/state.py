"""What the stack runs (components) and what it started (the state file under the data directory)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Component:
    """One process of the stack and how to tell that it is ready."""

    name: str
    command: list[str]
    ready_url: str
    listens: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None


@dataclass
class StackState:
    """The running stack: its id (tagged in every process's environment) and its components."""

    stack_id: str
    shm_prefix: str
    components: list[Component]

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(asdict(self) | {"components": [_public(c) for c in self.components]}, indent=2)
        )

    @classmethod
    def load(cls, path: Path) -> StackState:
        raw = json.loads(path.read_text())
        comps = [Component(**c) for c in raw["components"]]
        return cls(raw["stack_id"], raw["shm_prefix"], comps)


def _public(c: Component) -> dict[str, object]:
    """A component without its environment (which holds secrets) for the state file."""
    d = asdict(c)
    d["env"] = {}
    return d
