"""Rule "Clean Descriptors" fails closed: a descriptor is kept only when every word is clinical
vocabulary and none is a surname or given name, follows a title or is a single capital initial;
otherwise the whole value is replaced.

The corpus is generated: surnames that are also words (several of them clinical vocabulary),
in the forms they take in reports and descriptors.
"""

from __future__ import annotations

import itertools
import random
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import Recipe

from tests.unit.deid.deid_canary import canary_dataset, to_bytes

#: Surnames (1990 US Census list) that are also English words; the first eight are the ones the
#: privacy officer saw survive, several of them clinical vocabulary.
WORD_SURNAMES = ("hand", "early", "lung", "bone", "sat", "echo", "portal", "back", "head", "foot",
                 "long", "little", "young", "king", "rose", "wood", "stone", "hill", "bell", "cross",
                 "white", "brown", "green", "black", "may", "day", "rich", "short", "love", "baker")
TEMPLATES = ("Dr {i} {n} follow up", "{n} follow up", "follow up {n}", "Mr {n}", "Prof. {n} chest",
             "{i}. {n} axial", "{N} CHEST", "chest {lower}", "Mrs {n} left hand", "seen by {n}",
             "{i} {i} {n}", "lung {N} {i}", "{N}")
KEPT = ("axial t1 contrast", "CT CHEST WO CONTRAST", "Sagittal STIR", "dwi b1000 adc",
        "coronal mpr thin", "follow up", "delayed venous phase", "")
REPLACED = "ANONYMIZED"


def _corpus() -> list[str]:
    rng = random.Random(21)
    cases = []
    for name, template in itertools.product(WORD_SURNAMES, TEMPLATES):
        initial = rng.choice("ABCDEFGHJKLMNPRSTW")
        cases.append(template.format(n=name.title(), N=name.upper(), lower=name, i=initial))
    return cases


def _clean(engine: Deidentifier, text: str) -> tuple[str, str]:
    ds: Dataset = canary_dataset("CT", 1, canaries=False)
    ds.StudyDescription = text  # LO, X/Z with clean descriptors = C
    ds.ImageComments = text  # LT, X with clean descriptors = C
    out = pydicom.dcmread(BytesIO(engine.deidentify(to_bytes(ds), "tenant-a").data))
    return str(out.StudyDescription), str(out.ImageComments)


def test_clean_descriptors_name_lists_hold_the_word_surnames(recipe: Recipe) -> None:
    assert set(WORD_SURNAMES) <= recipe.descriptors.names
    assert len(recipe.descriptors.names) > 90_000


@pytest.mark.parametrize("text", _corpus())
def test_clean_descriptors_replace_every_value_with_a_surname(text: str, engine: Deidentifier) -> None:
    assert _clean(engine, text) == (REPLACED, REPLACED)


@pytest.mark.parametrize("text", ["Dr W Hand follow up", "W Hand", "follow up Dr", "CNRY chest",
                                  "chest 12345", "chest w contrast J"])
def test_clean_descriptors_titles_initials_and_unknown_words_replace_the_value(
        text: str, engine: Deidentifier) -> None:
    assert _clean(engine, text) == (REPLACED, REPLACED)


@pytest.mark.parametrize("text", KEPT)
def test_clean_descriptors_keep_a_value_of_vocabulary_words_only(text: str, engine: Deidentifier) -> None:
    assert _clean(engine, text) == (text, text)
