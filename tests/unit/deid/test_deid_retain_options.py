"""The retain options of PS3.15 Table E.1-1 for research and QA under a data-sharing agreement:
Retain UIDs, Retain Longitudinal Temporal Information with Full Dates and Retain Institution
Identity. One test per transcribed row, as for the basic profile: with the option on, the
attribute gets the option's action.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from io import BytesIO
from typing import Any

import pydicom
import pytest
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import Recipe, RecipeError, Rule, parse_recipe

from tests.unit.deid.conftest import SECRET
from tests.unit.deid.deid_canary import canary_dataset, to_bytes
from tests.unit.deid.test_deid_rules import check_rule

TEXT = resources.files("sightline_deid.resources.recipes").joinpath(
    "sightline-basic.yaml").read_text(encoding="utf-8")
#: option -> (its column in the recipe table, how many rows Table E.1-1 gives it, CID 7050 code)
OPTIONS = {"retain_uids": ("uid", 53, "113110"), "retain_longitudinal_full_dates": ("lfd", 56, "113106"),
           "retain_institution_identity": ("inst", 9, "113112")}


def _text(option: str) -> str:
    text = TEXT.replace(f"{option}: false", f"{option}: true")
    if option == "retain_longitudinal_full_dates":
        text = text.replace("retain_longitudinal_modified_dates: true",
                            "retain_longitudinal_modified_dates: false")
    return text


@cache
def _engine(option: str) -> Deidentifier:
    return Deidentifier(parse_recipe(_text(option)), SECRET)


def _rows(option: str) -> list[Rule]:
    column = OPTIONS[option][0]
    return [r for r in _engine(option).recipe.rules if column in r.options]


def _cases() -> list[Any]:
    return [pytest.param(option, rule, id=f"{option}-{rule.name}-{rule.options[OPTIONS[option][0]]}")
            for option in OPTIONS for rule in _rows(option)]


@pytest.mark.parametrize(("option", "rule"), _cases())
def test_retain_option_row(option: str, rule: Rule) -> None:
    assert rule.action == rule.options[OPTIONS[option][0]]
    check_rule(rule, _engine(option))


@pytest.mark.parametrize("option", list(OPTIONS))
def test_retain_option_is_off_by_default_and_transcribed(option: str, recipe: Recipe) -> None:
    assert recipe.options[option] is False
    assert len(_rows(option)) == OPTIONS[option][1]
    assert OPTIONS[option][2] in dict(_engine(option).recipe.method_codes(pixels_cleaned=False))
    assert OPTIONS[option][2] not in dict(recipe.method_codes(pixels_cleaned=False))


def test_retain_full_dates_marks_dates_unmodified() -> None:
    ds = canary_dataset("CT", 1)
    out = pydicom.dcmread(BytesIO(_engine("retain_longitudinal_full_dates").deidentify(
        to_bytes(ds), "tenant-a").data))
    assert out.StudyDate == ds.StudyDate and out.StudyTime == ds.StudyTime
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]


def test_retain_full_and_modified_dates_exclude_each_other() -> None:
    text = TEXT.replace("retain_longitudinal_full_dates: false", "retain_longitudinal_full_dates: true")
    with pytest.raises(RecipeError, match="exclude each other"):
        parse_recipe(text)
