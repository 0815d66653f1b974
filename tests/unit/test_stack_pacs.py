"""``sightline up`` with a PACS (SIGHTLINE_STACK_PACS_STOW_URL): the gateway forwards the development
tenant's results there, with a tenant key file made once per data directory (mode 0600)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from sightline_gateway.settings import GatewaySettings

from sightline.stack import plan, settings_on_free_ports
from sightline.stack.plan import DEV_TENANT
from tests.conftest import REPO


def _gateway_env(tmp: Path, **overrides: object) -> dict[str, str]:
    settings = settings_on_free_ports(tmp, model_repository=REPO / "model_repository", **overrides)
    (gateway,) = [c for c in plan(settings, "sightline_test_") if c.name == "gateway"]
    return gateway.env


def test_without_a_pacs_nothing_is_forwarded_nor_kept(tmp_path: Path) -> None:
    env = _gateway_env(tmp_path)
    assert "SIGHTLINE_GATEWAY_PACS_DESTINATIONS" not in env
    assert not (tmp_path / "tenant-keys.json").exists()


def test_with_a_pacs_the_gateway_forwards_the_dev_tenants_results_under_a_kept_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://127.0.0.1:8042/dicom-web/studies"
    env = _gateway_env(tmp_path, pacs_stow_url=url)
    keys = tmp_path.resolve() / "tenant-keys.json"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert len(base64.b64decode(json.loads(keys.read_text())[DEV_TENANT])) == 32
    first = keys.read_text()
    for key in [k for k in os.environ if k.startswith("SIGHTLINE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    built = GatewaySettings()  # type: ignore[call-arg]  # what the gateway's process builds
    assert built.pacs_destinations[DEV_TENANT].stow_url == url
    assert built.reidentification_keys_file == keys
    _gateway_env(tmp_path, pacs_stow_url=url)
    assert keys.read_text() == first  # the same key at every start: kept records stay openable
