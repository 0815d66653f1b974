"""`sightline model promote|rollback` against the gateway app in process: a worse candidate exits
1 and names the failing gate; an equal one is served (exit 0); rollback returns to version 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sightline import model_cli
from sightline.cli import app

from .gateway_fixtures import harness, token
from .test_model_promotion_api import _repository, _shadow


def _run(monkeypatch: pytest.MonkeyPatch, h: Any, *args: str) -> Any:
    monkeypatch.setattr(model_cli, "client", lambda base_url: _Borrowed(h.client))
    bearer = token(tenant="platform", roles=("admin",), subject="ops-lead")["Authorization"].split()[1]
    return CliRunner().invoke(app, ["model", *args, "--gateway", "http://gateway", "--token", bearer])


class _Borrowed:
    """The harness's TestClient, left open when the command's ``with`` block ends."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __enter__(self) -> Any:
        return self.client

    def __exit__(self, *exc: object) -> None:
        return None


def test_promote_refuses_a_worse_candidate_and_names_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path, candidate_auroc=0.80)) as h:
        _shadow(h, 200, 0)
        result = _run(monkeypatch, h, "promote", "derm-cnn", "2")
        assert result.exit_code == 1, result.output
        assert "auroc" in result.output and "FAIL" in result.output
        assert "still serves v1" in result.output


def test_promote_then_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with harness(tmp_path, model_repository=_repository(tmp_path)) as h:
        _shadow(h, 200, 0)
        result = _run(monkeypatch, h, "promote", "derm-cnn", "2")
        assert result.exit_code == 0, result.output
        assert "derm-cnn now serves v2" in result.output
        assert "candidate report sha256" in result.output
        result = _run(monkeypatch, h, "rollback", "derm-cnn")
        assert result.exit_code == 0, result.output
        assert "derm-cnn now serves v1" in result.output
        result = _run(monkeypatch, h, "rollback", "derm-cnn")
        assert result.exit_code == 2 and "no earlier version" in result.output
        result = _run(monkeypatch, h, "status", "derm-cnn")
        assert result.exit_code == 0, result.output
        assert "serving v1 (manifest v1); rollback to nothing" in result.output
        assert "promote" in result.output and "rollback" in result.output
