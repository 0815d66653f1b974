"""TensorRT engines are kept where the production model config says (issue 14): every Triton
workload the chart renders mounts a writable volume at the config's cache path, so a restarted
container does not rebuild its engines for minutes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import CHART, pod_specs, render

pytestmark = pytest.mark.charts

CONFIG = Path(__file__).resolve().parents[2] / "model_repository" / "derm-cnn" / "config.pbtxt"
VALUE_SETS = sorted((CHART / "ci").glob("*-values.yaml"))


def _cache_paths() -> set[str]:
    text = CONFIG.read_text()
    return set(re.findall(r'key: "trt_(?:engine|timing)_cache_path" value: "([^"]+)"', text))


def _triton_specs(values: Path) -> list[tuple[str, dict]]:
    return [
        (name, spec)
        for name, spec in pod_specs(render(str(values)))
        if name.endswith("-triton") or name.endswith("/predictor")
    ]


def test_the_production_config_caches_engines() -> None:
    assert _cache_paths(), "config.pbtxt no longer sets a TensorRT engine cache path"
    assert 'key: "trt_engine_cache_enable" value: "1"' in CONFIG.read_text()


def test_every_triton_workload_mounts_the_cache_path_writable() -> None:
    checked: list[str] = []
    for values in VALUE_SETS:
        for name, spec in _triton_specs(values):
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            container = spec["containers"][0]
            mounts = container.get("volumeMounts", [])
            for path in _cache_paths():
                covering = [
                    m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
                ]
                assert covering, f"{values.name} {name}: nothing mounted at {path}"
                mount = max(covering, key=lambda m: len(m["mountPath"]))
                assert not mount.get("readOnly"), f"{values.name} {name}: {path} is read-only"
                assert mount["name"] in volumes, f"{values.name} {name}: volume {mount['name']} missing"
            checked.append(f"{values.name}:{name}")
    # The Deployment and KServe's predictor must both have been seen, or this checked nothing.
    assert any(c.endswith("-triton") for c in checked), checked
    assert any(c.endswith("/predictor") for c in checked), checked


def test_a_named_claim_keeps_engines_across_pods() -> None:
    docs = render(str(CHART / "ci" / "gpu-values.yaml"), "triton.engineCache.existingClaim=trt-engines")
    (_, spec), *_ = [s for s in pod_specs(docs) if s[0].endswith("-triton")]
    volume = next(v for v in spec["volumes"] if v["name"] == "engine-cache")
    assert volume == {"name": "engine-cache", "persistentVolumeClaim": {"claimName": "trt-engines"}}
