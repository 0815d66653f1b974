"""Dockerfiles and skaffold.yaml, checked by parsing (no Docker engine here): base images pinned,
non-root USER, COPY sources present, entrypoints equal to what the chart runs, every chart
component built by skaffold from a Dockerfile that exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT

pytestmark = pytest.mark.charts

SERVICES = ["gateway", "deid", "preprocess", "explain", "receiver"]
DOCKERFILES = {name: ROOT / "services" / name / "Dockerfile" for name in SERVICES}
DOCKERFILES["triton"] = ROOT / "infra" / "triton" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def resolved_bases(path: Path) -> list[str]:
    args = {}
    bases = []
    stages = set()
    for keyword, rest in instructions(path):
        if keyword == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
        elif keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            if image not in stages:
                bases.append(image)
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    return bases


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name: str) -> None:
    for image in resolved_bases(DOCKERFILES[name]):
        assert "@sha256:" in image or re.search(r":[\w.-]*\d+\.\d+[\w.-]*$", image), (
            f"{name}: {image} not pinned"
        )
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root(name: str) -> None:
    users = [rest for keyword, rest in instructions(DOCKERFILES[name]) if keyword == "USER"]
    assert users, f"{name}: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"{name}: final USER {uid} must be a numeric non-root uid"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_and_pass_dockerignore(name: str) -> None:
    ignore = (ROOT / ".dockerignore").read_text()
    for keyword, rest in instructions(DOCKERFILES[name]):
        if keyword != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
            top = source.split("/")[0]
            assert f"!{top}" in ignore or f"!{source}" in ignore, (
                f"{name}: {source} excluded by .dockerignore"
            )


def _chart_command(name: str) -> list[str]:
    if name == "triton":
        return ["tritonserver"]
    return ["python", "-m", f"sightline_{name}"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_matches_chart(name: str) -> None:
    """The image's own entrypoint is what the chart runs, so `docker run` and the cluster agree."""
    found = [(k, rest) for k, rest in instructions(DOCKERFILES[name]) if k in ("ENTRYPOINT", "CMD")]
    keyword, rest = found[-1]
    argv = json.loads(rest)
    expected = _chart_command(name)
    assert argv[: len(expected)] == expected, f"{name}: {keyword} {argv} vs chart {expected}"
    template = (CHART / "templates" / ("triton.yaml" if name == "triton" else "components.yaml")).read_text()
    rendered_form = (
        'command: ["tritonserver"]'
        if name == "triton"
        else 'command: ["python", "-m", "sightline_{{ $name }}"]'
    )
    assert rendered_form in template


@pytest.mark.parametrize("name", SERVICES)
def test_service_images_expose_the_chart_port(name: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expose = [rest for k, rest in instructions(DOCKERFILES[name]) if k == "EXPOSE"][-1].split()
    assert str(values["components"][name]["port"]) in expose


def test_triton_python_backend_requirements_match_lock() -> None:
    lock = dict(
        line.split("==", 1) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    for line in (ROOT / "infra" / "triton" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            package, version = line.split("==")
            assert lock.get(package) == version, f"{package}=={version} differs from requirements.lock"


def test_skaffold_builds_every_component_and_deploys_the_chart() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4")
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    for image, artifact in artifacts.items():
        dockerfile = ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
        assert dockerfile.is_file(), f"{image}: {dockerfile} missing"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    wanted = {c["image"]["repository"] for c in values["components"].values()} | {
        values["triton"]["image"]["repository"]
    }
    assert wanted == set(artifacts), "every chart component needs exactly one skaffold artifact"
    release = config["manifests"]["helm"]["releases"][0]
    assert release["chartPath"] == "charts/sightline"
    templates = release["setValueTemplates"]
    for key, image in [(f"components.{n}.image", f"sightline/{n}") for n in SERVICES] + [
        ("triton.image", "sightline/triton")
    ]:
        token = image.replace("/", "_")
        assert templates[f"{key}.repository"] == f"{{{{.IMAGE_REPO_{token}}}}}"
        assert f"IMAGE_TAG_{token}" in templates[f"{key}.tag"]
    profiles = {p["name"]: p for p in config["profiles"]}
    assert {"cpu", "gpu"} <= set(profiles)
    for name, profile in profiles.items():
        files = [f for patch in profile["patches"] for f in patch["value"]]
        assert files and all((ROOT / f).is_file() and "/ci/" in f for f in files), name
