"""One test per recipe rule, named after the rule: the attribute gets exactly its action."""

from __future__ import annotations

import re
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sightline_deid.core.actions import walk
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import Rule, load_recipe

from tests.unit.deid.deid_canary import canary_dataset, to_bytes

RECIPE = load_recipe("sightline-basic")
WRITTEN_BY_SERVICE = {"PatientIdentityRemoved", "DeidentificationMethod",
                      "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified"}
MASK_EXAMPLES = {"50XXXXXX": 0x50003000, "60XX4000": 0x60004000, "60XX3000": 0x60003000}
_VALUES: dict[str, Any] = {
    "AE": "CNRYAE", "AS": "042Y", "CS": "CNRYCS", "DA": "20200115", "DS": "1.5",
    "DT": "20200115101010", "FL": 1.5, "FD": 1.5, "IS": "7", "LO": "CNRYTEXT chest",
    "LT": "CNRYTEXT chest", "SH": "CNRYTEXT", "ST": "CNRYTEXT chest", "UC": "CNRYTEXT",
    "UT": "CNRYTEXT chest", "PN": "CNRY^PERSON", "TM": "101010", "UI": "1.2.999.7777.1",
    "UL": 7, "US": 7, "SS": 7, "SL": 7, "SV": 7, "UV": 7, "AT": 0x00100010, "UR": "http://cnry.example",
}


def _rules() -> list[Any]:
    return [pytest.param(r, id=f"{r.source}-{r.name}-{r.action}")
            for r in RECIPE.rules if r.pattern != "PRIVATE"]


def _value(vr: str) -> Any:
    if vr == "SQ":
        item = Dataset()
        item.CodeValue = "123"
        item.CodingSchemeDesignator = "DCM"
        return Sequence([item])
    return _VALUES.get(vr, b"CNRYCNRY")


def _run(engine: Deidentifier, ds: Dataset) -> Dataset:
    result = engine.deidentify(to_bytes(ds, canary_meta=False), "tenant-a")
    return pydicom.dcmread(BytesIO(result.data))


@pytest.mark.parametrize("rule", _rules())
def test_recipe_rule(rule: Rule, engine: Deidentifier) -> None:
    check_rule(rule, engine)


def check_rule(rule: Rule, engine: Deidentifier) -> None:
    """The attribute of ``rule``, planted in a file, comes out with exactly ``rule.action``."""
    tag = MASK_EXAMPLES.get(rule.pattern) or int(rule.pattern, 16)
    base = canary_dataset("CT", 1, canaries=False)
    base.NumberOfFrames = 1
    if tag >> 16 == 0x0000:  # command set: pydicom cannot even write it into a file
        base.add_new(tag, "UI", "1.2.999.7777.1")
        walk(base, engine.context("tenant-a"))
        assert tag not in base
        return
    if tag >> 16 == 0x0002:  # file meta: the dataset body never carries it
        out = _run(engine, base)
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        sop_instance = engine.recipe.action_for(0x00080018)
        assert out.SOPInstanceUID.startswith("2.25.") == (sop_instance is None or sop_instance.action != "K")
        return
    vr = dictionary_VR(tag).split(" or ")[0] if tag not in MASK_EXAMPLES.values() else (
        "LT" if tag & 0xFFFF == 0x4000 else "OB")
    if tag in base:
        original = base[tag].value
    else:
        original = _value(vr)
        base.add_new(tag, vr, original)
    out = _run(engine, base)
    action = rule.action
    if rule.name in WRITTEN_BY_SERVICE:
        assert tag in out
        return
    if action == "X" or (action == "D" and vr == "SQ" and rule.basic == "X/D"):
        assert tag not in out
        return
    assert tag in out, f"{rule.name} must be present after {action}"
    got = out[tag].value
    if vr == "SQ":
        if action in ("Z", "D"):
            assert len(got) == 0
        return
    if action == "Z":
        assert got in ("", None, b"")
    elif action == "K":
        assert got == original or str(got) == str(original)
    elif action in ("U", "U*"):
        assert str(got).startswith("2.25.") and str(got) != str(original)
    elif action == "H":
        assert re.fullmatch(r"[0-9A-F]{16}", str(got))
    elif action == "D":
        assert got not in (None, "") and str(got) != str(original)
    elif action == "C":
        if vr in ("DA", "DT"):
            assert re.fullmatch(r"\d{8}", str(got)[:8]) and str(got) != str(original)
        elif vr == "TM":  # times of day move with the patient's offset (seconds)
            assert re.fullmatch(r"\d{6}", str(got)) and str(got) != str(original)
        elif rule.name == "TimezoneOffsetFromUTC":
            assert str(got) == str(original)
        else:
            assert "CNRY" not in str(got)


def test_recipe_rule_PRIVATE_only_safe_numeric_private_attributes_survive(engine: Deidentifier) -> None:
    ds = canary_dataset("CT", 1)
    out = _run(engine, ds)
    private = [e for e in out if e.tag.is_private]
    assert {(e.tag, e.value) for e in private} == {(0x00090011, "SIGHTLINE SAFE"), (0x00091101, 42)}


def test_every_table_row_resolves_to_a_single_action() -> None:
    assert len([r for r in RECIPE.rules if r.source == "table"]) >= 450
    assert all(r.action in {"X", "Z", "D", "K", "C", "U", "U*", "H"} for r in RECIPE.rules)
