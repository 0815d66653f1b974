"""`helm show readme` documents every setting, generated from values.schema.json (finding 10);
the test fails when a schema or default change was not regenerated into the README."""

from __future__ import annotations

import importlib.util
import json

import pytest

from .conftest import CHART, ROOT, run_helm

pytestmark = pytest.mark.charts

_spec = importlib.util.spec_from_file_location("chart_readme", ROOT / "scripts" / "chart_readme.py")
assert _spec and _spec.loader
chart_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chart_readme)


def test_readme_is_generated_from_the_current_schema() -> None:
    assert (CHART / "README.md").read_text() == chart_readme.render_readme(), (
        "charts/sightline/README.md is stale: run python scripts/chart_readme.py"
    )


def test_helm_show_readme_lists_every_top_level_setting() -> None:
    readme = run_helm("show", "readme", str(CHART)).stdout
    schema = json.loads((CHART / "values.schema.json").read_text())
    for key in schema["properties"]:
        assert f"`{key}" in readme, key
    assert "helm test" in readme and "Secrets" in readme
