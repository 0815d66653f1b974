"""``sightline up`` gives the receiver an encrypted spool under the stack's data directory."""

from __future__ import annotations

import stat
from pathlib import Path

from sightline_receiver.core.sealing import load_key
from sightline_receiver.settings import ReceiverSettings

from sightline.stack import settings_on_free_ports
from sightline.stack.plan import dev_secrets, service_settings
from tests.conftest import REPO


def test_the_stacks_receiver_spools_under_its_data_dir_with_one_key_per_data_dir(tmp_path: Path) -> None:
    stack = settings_on_free_ports(tmp_path, model_repository=REPO / "model_repository")
    data = stack.data_dir.resolve()
    receiver = service_settings(stack, dev_secrets(data))["receiver"]
    assert isinstance(receiver, ReceiverSettings)
    assert receiver.spool_dir == data / "receiver-spool" and not receiver.spool_unencrypted
    assert receiver.spool_key_file is not None
    assert stat.S_IMODE(receiver.spool_key_file.stat().st_mode) == 0o600
    key = load_key(receiver.spool_key_file)
    again = service_settings(stack, dev_secrets(data))["receiver"]
    assert load_key(again.spool_key_file) == key  # type: ignore[attr-defined]  # a new key would orphan the spool
