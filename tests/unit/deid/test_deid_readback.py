"""The self-check's read-back: every output reads back, and a damaged one is never returned.

:mod:`sightline_deid.core.readback` replaced a second pydicom parse of each output (a sixth of
the engine's time). It must accept everything the writer produces (and agree with pydicom on the
values it compares), and refuse what pydicom would misread or not read at all.
"""

from __future__ import annotations

import struct

import pydicom
import pytest
from sightline_common.errors import UnprocessableInput
from sightline_deid.core import engine as engine_module
from sightline_deid.core import writer
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.readback import Unreadable, read_back

from tests.unit.deid.deid_canary import canary_corpus
from tests.unit.deid.real_files import DEIDENTIFIED, installed_files, pinned_outcomes

_SOP_CLASS, _SOP_INSTANCE, _REMOVED = 0x00080016, 0x00080018, 0x00120062


def _outputs(engine: Deidentifier) -> list[tuple[str, bytes]]:
    pinned = pinned_outcomes()
    real = [(name, path.read_bytes()) for name, path in sorted(installed_files().items())
            if pinned.get(name) == DEIDENTIFIED]
    return [(name, engine.deidentify(data, "tenant-a").data)
            for name, data in [*canary_corpus(per_modality=2), *real]]


def test_every_output_reads_back_and_agrees_with_pydicom(engine: Deidentifier) -> None:
    outputs = _outputs(engine)
    assert len(outputs) > 20
    for name, out in outputs:
        meta, found = read_back(out)
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(out))
        assert found[_SOP_CLASS].rstrip(b"\x00 ").decode() == ds.SOPClassUID, name
        assert found[_SOP_INSTANCE].rstrip(b"\x00 ").decode() == ds.SOPInstanceUID, name
        assert meta[0x00020003].rstrip(b"\x00 ").decode() == ds.file_meta.MediaStorageSOPInstanceUID, name
        assert found[_REMOVED].rstrip(b" ") == b"YES", name


@pytest.fixture
def output(engine: Deidentifier) -> bytes:
    ct = dict(canary_corpus(per_modality=1))["CT-1"]  # explicit VR little endian
    return engine.deidentify(ct, "tenant-a").data


def _first_sequence(out: bytes) -> int:
    """Offset of the first top-level SQ header in an explicit VR little endian output."""
    pos = 132 + 12 + struct.unpack_from("<I", out, 140)[0]
    while out[pos + 4:pos + 6] != b"SQ":
        if out[pos + 4:pos + 6].decode() in writer.LONG_VRS:
            pos += 12 + struct.unpack_from("<I", out, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", out, pos + 6)[0]
    return pos


def test_damaged_outputs_are_unreadable(output: bytes) -> None:
    read_back(output)  # the undamaged one reads
    sq = _first_sequence(output)
    (sq_length,) = struct.unpack_from("<I", output, sq + 8)
    item = sq + 12
    damaged = {
        "truncated": output[:-3],
        "no DICM": output[:128] + b"DICN" + output[132:],
        "value past its container": output[:sq + 8] + struct.pack("<I", sq_length + 2) + output[sq + 12:],
        "item past its sequence": output[:item + 4] + struct.pack("<I", sq_length) + output[item + 8:],
        "not an item in a sequence": output[:item] + b"\xfe\xff\x0d\xe0" + output[item + 4:],
        "tags out of order": _swap_first_two_elements(output),
    }
    accepted = []
    for name, data in damaged.items():
        try:
            read_back(data)
        except Unreadable:
            continue
        accepted.append(name)
    assert accepted == []


def _swap_first_two_elements(out: bytes) -> bytes:
    start = 132 + 12 + struct.unpack_from("<I", out, 140)[0]
    lengths = []
    pos = start
    for _ in range(2):
        size = 8 + struct.unpack_from("<H", out, pos + 6)[0]  # the first two are short VRs (UI/CS/DA)
        lengths.append(size)
        pos += size
    first, second = out[start:start + lengths[0]], out[start + lengths[0]:pos]
    return out[:start] + second + first + out[pos:]


def test_a_writer_bug_is_refused_not_returned(engine: Deidentifier, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dict(canary_corpus(per_modality=2))["MR-4"]  # implicit VR
    write = writer.write
    monkeypatch.setattr(engine_module.writer, "write", lambda ds: write(ds)[:-2])
    with pytest.raises(UnprocessableInput) as info:
        engine.deidentify(data, "tenant-a")
    assert info.value.extra["reason"] == "invalid-output"


def test_deflated_output_reads_back(output: bytes) -> None:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(output))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    meta, found = read_back(writer.write(ds))
    assert meta[0x00020010].rstrip(b"\x00") == pydicom.uid.DeflatedExplicitVRLittleEndian.encode()
    assert found[_REMOVED].rstrip(b" ") == b"YES"
    assert found[_SOP_INSTANCE].rstrip(b"\x00") == ds.SOPInstanceUID.encode()
