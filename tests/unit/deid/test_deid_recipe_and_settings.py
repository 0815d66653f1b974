"""Recipes are validated data; settings refuse to run without a recipe or with a weak key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sightline_deid.core.recipe import RecipeError, available_recipes, load_recipe, parse_recipe
from sightline_deid.settings import DeidSettings

SHIPPED = load_recipe("sightline-basic")


def _text() -> str:
    from importlib import resources

    return resources.files("sightline_deid.resources.recipes").joinpath("sightline-basic.yaml").read_text()


def test_shipped_recipe_is_listed_and_versioned() -> None:
    assert "sightline-basic" in available_recipes()
    assert SHIPPED.version and len(SHIPPED.sha256) == 64


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "copy.yaml"
    path.write_text(_text())
    assert load_recipe(str(path)).sha256 == SHIPPED.sha256


@pytest.mark.parametrize("name", ["", "no-such-recipe", "/nonexistent/recipe.yaml"])
def test_unknown_recipe_is_refused(name: str) -> None:
    with pytest.raises(RecipeError):
        load_recipe(name)


@pytest.mark.parametrize(("old", "new"), [
    ("  - 00080050 Z\n", "  - 00080050 Q\n"),
    ("  - 00080050 Z\n", "  - 00080050 Z\n  - 00080050 X\n"),
    ("    reason: a consistent", "    why: a consistent"),
    ("  X/Z: Z\n", ""),
    ("  - PRIVATE X sp=C\n", ""),
    ("name: sightline-basic\n", ""),
])
def test_malformed_recipe_is_refused(old: str, new: str) -> None:
    text = _text()
    assert old in text
    with pytest.raises(RecipeError):
        parse_recipe(text.replace(old, new, 1))


def test_option_off_changes_the_resolved_action() -> None:
    recipe = parse_recipe(_text().replace("retain_patient_characteristics: true",
                                          "retain_patient_characteristics: false"))
    assert recipe.action_for(0x00101010).action == "X"  # PatientAge back to the basic profile
    assert SHIPPED.action_for(0x00101010).action == "K"


def test_settings_require_a_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGHTLINE_DEID_RECIPE", raising=False)
    with pytest.raises(ValidationError):
        DeidSettings(environment="development")  # type: ignore[call-arg]


def test_settings_refuse_development_key_in_production() -> None:
    with pytest.raises(ValidationError):
        DeidSettings(recipe="sightline-basic", environment="production")
    ok = DeidSettings(recipe="sightline-basic", environment="production", pseudonym_key="x" * 40)
    assert ok.port == 8020


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHTLINE_DEID_RECIPE", "sightline-basic")
    monkeypatch.setenv("SIGHTLINE_DEID_ENVIRONMENT", "development")
    monkeypatch.setenv("SIGHTLINE_DEID_PORT", "9123")
    s = DeidSettings()  # type: ignore[call-arg]
    assert (s.recipe, s.port) == ("sightline-basic", 9123)
