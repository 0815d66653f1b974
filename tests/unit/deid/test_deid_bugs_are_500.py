"""A bug in the engine is an error of ours (500), never a 4xx blamed on the caller's file.

Only the parser, the value and pixel decoders and the character-set encoder turn exceptions into
refusals; an exception raised anywhere else in the pipeline must propagate unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sightline_common.errors import SightlineError
from sightline_common.settings import TelemetrySettings
from sightline_deid.app import create_app
from sightline_deid.core import actions, burned_in, guards, writer
from sightline_deid.core.engine import Deidentifier
from sightline_deid.settings import DeidSettings

from tests.unit.deid.deid_canary import canary_dataset, to_bytes
from tests.unit.deid.real_files import DEIDENTIFIED, installed_files, outcome, pinned_outcomes

BUGS = [AttributeError, KeyError, TypeError, ValueError, RuntimeError, UnicodeDecodeError]
#: Functions of each stage, each called for every file that reaches that stage.
TARGETS = [(guards, "check_pixels"), (burned_in, "decide"), (actions, "pseudonymise"),
           (actions, "scrub"), (actions, "shift_dates"), (actions, "_apply_encoded"),
           (writer, "file_meta")]


def _raise(bug: type[Exception]) -> Any:
    def broken(*args: Any, **kwargs: Any) -> Any:
        if bug is UnicodeDecodeError:
            raise UnicodeDecodeError("ascii", b"\xff", 0, 1, "injected")
        raise bug("injected")

    return broken


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.__name__)
@pytest.mark.parametrize(("module", "name"), TARGETS, ids=[f"{m.__name__.rsplit('.', 1)[1]}.{n}"
                                                          for m, n in TARGETS])
def test_injected_bug_propagates(module: Any, name: str, bug: type[Exception], engine: Deidentifier,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, name, _raise(bug))
    with pytest.raises(bug) as info:
        engine.deidentify(to_bytes(canary_dataset("CT", 1)), "tenant-a")
    assert not isinstance(info.value, SightlineError)


def test_injected_bug_refuses_no_real_file(engine: Deidentifier, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure the old catch-all hid: with a bug in an action, most real files were refused."""
    monkeypatch.setattr(actions, "pseudonymise", _raise(AttributeError))  # every file has UIDs
    pinned = pinned_outcomes()
    for name, path in installed_files().items():
        try:
            got = outcome(engine, path.read_bytes())
        except AttributeError:
            got = "bug"
        # A file refused before the actions run keeps its reason; every other one meets the bug.
        assert got == ("bug" if pinned[name] == DEIDENTIFIED else pinned[name]), name


def test_injected_bug_is_a_500_without_phi(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DeidSettings(recipe="sightline-basic", environment="test",
                            telemetry=TelemetrySettings(exporter="none"))
    client = TestClient(create_app(settings), raise_server_exceptions=False)
    monkeypatch.setattr(actions, "scrub", _raise(AttributeError))
    r = client.post("/v1/deidentify", content=to_bytes(canary_dataset("CT", 1)),
                    headers={"content-type": "application/dicom", "X-Sightline-Tenant": "hospital-a"})
    assert r.status_code == 500
    assert r.json()["code"] == "internal"
    assert "CNRY" not in r.text and "7777" not in r.text
