"""Regenerate the values reference in charts/sightline/README.md from values.schema.json.

The README's hand-written part ends at MARKER; everything after it is generated: one row per
setting (key, type, default from values.yaml, description from the schema). Settings that share
a schema definition (the four components) are listed once, in their own table.

    python scripts/chart_readme.py          # rewrite the README
    python scripts/chart_readme.py --check  # exit 1 when the README is stale (tests/charts does this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "sightline"
README = CHART / "README.md"
MARKER = "<!-- Generated below by scripts/chart_readme.py from values.schema.json: do not edit by hand. -->"
#: Definitions documented in their own table instead of once per use.
SHARED = {"component": "Component settings (`components.<name>.*`)"}

Row = tuple[str, str, str, str]


def _type(node: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in node:
        target = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return _type(target, schema)
    kind = node.get("type", "")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in node:
        text += " (" + ", ".join(json.dumps(v) for v in node["enum"]) + ")"
    return text


def _default(values: Any) -> str:
    if values is _MISSING:
        return ""
    text = json.dumps(values, separators=(", ", ": "))
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


_MISSING = object()


def _rows(node: dict[str, Any], schema: dict[str, Any], prefix: str, values: Any) -> list[Row]:
    rows: list[Row] = []
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        value = values.get(key, _MISSING) if isinstance(values, dict) else _MISSING
        description = " ".join(str(child.get("description", "")).split())
        description = description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        ref = child.get("$ref", "").rsplit("/", 1)[-1]
        target = schema["definitions"].get(ref, child) if ref else child
        if ref in SHARED:
            rows.append((path, "object", "", f"{description} See {SHARED[ref]}."))
        elif target.get("type") == "object" and target.get("properties"):
            rows += _rows(target, schema, path, value)
        else:
            rows.append((path, _type(child, schema), _default(value), description))
    return rows


def _table(rows: list[Row]) -> list[str]:
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in rows]
    return lines


def generate() -> str:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    out = [
        "## Values",
        "",
        "Defaults come from `values.yaml`; `values.schema.json` refuses unknown keys.",
        "",
    ]
    out += _table(_rows(schema, schema, "", values))
    for ref, title in SHARED.items():
        example = values["components"]["gateway"]
        out += ["", f"### {title}", "", "Defaults shown are the gateway's.", ""]
        out += _table(_rows(schema["definitions"][ref], schema, "components.<name>", example))
    return "\n".join(out) + "\n"


def render_readme() -> str:
    text = README.read_text()
    head = text.split(MARKER, 1)[0].rstrip("\n")
    return f"{head}\n\n{MARKER}\n\n{generate()}"


def main(argv: list[str]) -> int:
    fresh = render_readme()
    if "--check" in argv:
        if README.read_text() != fresh:
            sys.stderr.write("charts/sightline/README.md is stale: run python scripts/chart_readme.py\n")
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
