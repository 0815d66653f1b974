"""The spool on disk: durable, sealed (AES-256-GCM), read back after a restart, bad files quarantined."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from sightline_receiver.core.sealing import InvalidKey, Sealer, Unreadable, load_key
from sightline_receiver.core.spool import Spool, SpoolError
from sightline_receiver.settings import ReceiverSettings

from tests.unit.gateway.gateway_fixtures import PHI
from tests.unit.receiver.receiver_fixtures import TENANT, dataset, receiver_settings, study_instances

KEY = bytes(range(32))


def ids(part10: bytes) -> tuple[str, str]:
    ds = dataset(part10)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def spooled(root: Path, key: bytes | None = KEY, n: int = 2) -> tuple[Spool, list[bytes]]:
    """An open spool under ``root`` holding one study of ``n`` instances."""
    spool = Spool(root, Sealer(key))
    spool.open()
    instances = study_instances(n)
    for part10 in instances:
        spool.write(TENANT, *ids(part10), part10)
    return spool, instances


def files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "studies").rglob("*") if p.is_file())


def test_what_was_written_is_read_back_after_a_restart(tmp_path: Path) -> None:
    spool, instances = spooled(tmp_path / "spool")
    spool.close()  # the process ends
    again = Spool(tmp_path / "spool", Sealer(KEY))
    found = again.open()
    (study,) = found.studies
    study_uid = ids(instances[0])[0]
    assert (study.tenant, study.study_uid, found.quarantined) == (TENANT, study_uid, 0)
    assert study.sizes == {ids(b)[1]: len(b) for b in instances}
    assert [again.read(TENANT, study_uid, ids(b)[1]) for b in instances] == instances
    assert again.usage() == (1, sum(p.stat().st_size for p in files(tmp_path / "spool")))


def test_spooled_files_are_encrypted_and_named_by_hashes_with_owner_only_modes(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _, instances = spooled(root)
    uids = [uid for b in instances for uid in ids(b)]
    for path in files(root):
        blob = path.read_bytes()
        assert PHI.encode() not in blob and b"DOE^JANE" not in blob  # the planted patient name
        assert not any(uid.encode() in blob for uid in uids)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    names = [str(p.relative_to(root)) for p in root.rglob("*")]
    assert not any(uid in name for uid in uids for name in names)
    for directory in [root / "studies", root / "quarantine", *(p for p in root.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory.name


def tamper(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-40] ^= 0x01
    path.write_bytes(bytes(blob))


def move_to_another_study(path: Path) -> None:
    other = path.parent.with_name("0123456789ab")
    other.mkdir(mode=0o700)
    path.rename(other / path.name)


@pytest.mark.parametrize(
    "damage",
    [
        tamper,
        lambda p: p.write_bytes(p.read_bytes()[:100]),  # truncated
        lambda p: p.write_bytes(Sealer(os.urandom(32)).seal(b"x" * 64, b"")),  # another key
        lambda p: p.write_bytes(Sealer(None).seal(p.read_bytes(), b"")),  # planted in the clear
        move_to_another_study,  # the associated data binds a file to its place
    ],
    ids=["tampered", "truncated", "other-key", "unencrypted", "moved"],
)
def test_a_file_that_does_not_open_is_quarantined_and_the_rest_is_recovered(
    tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "spool"
    spool, instances = spooled(root)
    spool.close()
    bad = files(root)[0]
    damage(bad)  # type: ignore[operator]
    found = Spool(root, Sealer(KEY)).open()
    assert found.quarantined == 1
    assert sum(len(s.sizes) for s in found.studies) == len(instances) - 1
    assert [p.name for p in (root / "quarantine").rglob("*") if p.is_file()] == [bad.name]
    logged = caplog.text
    assert "quarantined" in logged and not any(uid in logged for b in instances for uid in ids(b))


def test_an_interrupted_write_is_dropped_and_stray_entries_are_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool, _ = spooled(root, n=1)
    spool.close()
    study_dir = files(root)[0].parent
    (study_dir / ".incoming-abc123").write_bytes(b"half an instance")
    (study_dir / "1.2.840.99999.1.dcm").write_bytes(b"copied in by hand")
    found = Spool(root, Sealer(KEY)).open()
    assert (found.partial, found.quarantined, len(found.studies)) == (1, 1, 1)
    assert len(files(root)) == 1


def test_one_receiver_per_spool_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool", Sealer(KEY))
    first.open()
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path / "spool", Sealer(KEY)).open()
    first.close()
    Spool(tmp_path / "spool", Sealer(KEY)).open()


def test_a_write_that_fails_raises_without_naming_the_path(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool(root, Sealer(KEY))
    spool.open()
    (root / "studies").rmdir()
    (root / "studies").write_bytes(b"")  # the disk is not what it was: every write fails
    part10 = study_instances(1)[0]
    with pytest.raises(SpoolError) as exc:
        spool.write(TENANT, *ids(part10), part10)
    assert exc.value.reason == "spool write failed (ENOTDIR)"
    assert spool.usage() == (0, 0)


def test_remove_and_quarantine_prune_the_study_directory_only_when_asked(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool, instances = spooled(root)
    study_uid, first = ids(instances[0])
    spool.remove(TENANT, study_uid, [first], prune=True)  # the other instance is still there
    assert len(files(root)) == 1
    assert spool.quarantine(TENANT, study_uid, [ids(instances[1])[1]], prune=True) == 1
    assert files(root) == [] and list((root / "studies" / TENANT).iterdir()) == []
    assert spool.usage() == (0, 0)


# --- the key ---


def test_the_key_file_holds_32_bytes_base64_encoded(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(base64.b64encode(KEY) + b"\n")
    assert load_key(path) == KEY


@pytest.mark.parametrize(
    ("content", "reason"),
    [(base64.b64encode(b"k" * 16), "32 bytes"), (b"not base64 at all!", "not base64"), (KEY, "not base64")],
)
def test_a_bad_key_file_is_refused_without_showing_it(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(InvalidKey, match=reason) as exc:
        load_key(path)
    assert content.decode(errors="replace") not in str(exc.value)
    with pytest.raises(InvalidKey, match="unreadable"):
        load_key(tmp_path / "missing")


def test_an_unencrypted_spool_refuses_sealed_files() -> None:
    sealed = Sealer(KEY).seal(b"instance", b"place")
    with pytest.raises(Unreadable):
        Sealer(None).open(sealed, b"place")
    assert Sealer(None).open(Sealer(None).seal(b"instance", b"place"), b"place") == b"instance"


def test_without_a_key_file_the_receiver_does_not_start_unless_told_unencrypted(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="spool_key_file"):
        receiver_settings(tmp_path, spool_key_file=None)
    assert receiver_settings(tmp_path, spool_key_file=None, spool_unencrypted=True).spool_unencrypted
    with pytest.raises(ValidationError, match="development and test only"):
        receiver_settings(tmp_path, spool_key_file=None, spool_unencrypted=True, environment="production")
    assert isinstance(receiver_settings(tmp_path, environment="production"), ReceiverSettings)
