"""The raw-bytes adapter and the decoded adapter of the actions write the same bytes.

Most values are de-identified straight on their encoded bytes (no character-set decoding and
re-encoding: faster); the rest go through pydicom's decoded element. Both feed the same op
implementations, so switching the raw adapter off must not change one byte of any output.
"""

from __future__ import annotations

from typing import Any

import pytest
from sightline_deid.core import actions
from sightline_deid.core.engine import Deidentifier

from tests.unit.deid.deid_canary import canary_corpus
from tests.unit.deid.real_files import DEIDENTIFIED, installed_files, pinned_outcomes

REAL = {name: path for name, path in installed_files().items() if pinned_outcomes().get(name) == DEIDENTIFIED}
# (file, whether the raw adapter must take part: some real files hold nothing it handles)
CASES = [
    *(pytest.param(lambda p=path: p.read_bytes(), False, id=name) for name, path in sorted(REAL.items())),
    *(pytest.param(lambda d=data: d, True, id=f"synthetic/{name}")
      for name, data in canary_corpus(per_modality=2)),
]


@pytest.mark.parametrize(("load", "uses_raw"), CASES)
def test_raw_and_decoded_paths_write_identical_bytes(
    load: Any, uses_raw: bool, engine: Deidentifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load()
    encoded = actions._apply_encoded
    raw_applied = 0

    def counting(*args: Any) -> Any:
        nonlocal raw_applied
        result = encoded(*args)
        raw_applied += result is not None
        return result

    monkeypatch.setattr(actions, "_apply_encoded", counting)
    with_raw = engine.deidentify(data, "tenant-a").data
    monkeypatch.setattr(actions, "_apply_encoded", lambda *args: None)
    decoded_only = engine.deidentify(data, "tenant-a").data
    assert with_raw == decoded_only
    assert raw_applied > 0 or not uses_raw
