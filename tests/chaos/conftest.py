"""One stack for the chaos run, tokens per case, and the figures of every case in the run's summary."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sightline.stack import Stack, settings_on_free_ports
from tests.conftest import REPO

#: One line per chaos case, printed at the end of the run (a benchmark's figures, not asserted).
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("chaos figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


@dataclass
class ChaosStack:
    """A running stack and what a chaos case needs of it: its URL, tokens and its database."""

    stack: Stack

    @property
    def url(self) -> str:
        return f"http://{self.stack.settings.host}:{self.stack.settings.gateway_port}"

    def token(self, tenant: str, subject: str = "chaos-client") -> str:
        from sightline_gateway.core.auth import mint_dev_token

        secret = json.loads((self.stack.settings.data_dir / "secrets.json").read_text())["jwt_secret"]
        return mint_dev_token(secret, "sightline-dev", "sightline", tenant, ["submitter"], 3600, subject)

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Read the gateway's SQLite database (read-only, as an operator would)."""
        path = self.stack.settings.data_dir / "sightline.db"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, args).fetchall()

    def result_times(self, tenant: str) -> list[float]:
        """Epoch seconds at which the tenant's results were stored."""
        rows = self.query(
            "SELECT r.created_at FROM results r JOIN studies s ON s.id = r.study_id WHERE s.tenant_id = ?",
            tenant,
        )
        return sorted(_epoch(str(created)) for (created,) in rows)


def _epoch(stored: str) -> float:
    when = datetime.fromisoformat(stored)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    """The whole stack on free ports, started once and shared by every case (each its own tenant)."""
    data = tmp_path_factory.mktemp("chaos")
    stack = Stack(
        settings_on_free_ports(data, model_repository=REPO / "model_repository", ready_timeout_s=240)
    )
    state = stack.start()
    try:
        yield ChaosStack(stack)
    finally:
        stack.stop()
        del state


def logs_tail(stack: Stack, name: str, lines: int = 15) -> str:
    path: Path = stack.logs / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
