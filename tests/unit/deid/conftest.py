"""Shared fixtures of the de-identification unit tests."""

from __future__ import annotations

import pytest
from sightline_deid.core.engine import Deidentifier
from sightline_deid.core.recipe import Recipe, load_recipe

SECRET = b"unit-test-secret-unit-test-secret-0123"


@pytest.fixture(scope="session")
def recipe() -> Recipe:
    return load_recipe("sightline-basic")


@pytest.fixture(scope="session")
def engine(recipe: Recipe) -> Deidentifier:
    return Deidentifier(recipe, SECRET)
