"""Settings refuse an unusable configuration; the RayService import path builds the application."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from sightline_common.storage import LocalDirStore, S3Store
from sightline_explain.settings import ExplainSettings

from tests.unit.explain.conftest import REPOSITORY

BASE = {"model_repository": REPOSITORY, "environment": "test", "telemetry": {"exporter": "none"}}


def test_storage_must_be_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGHTLINE_EXPLAIN_STORAGE_DIR", raising=False)
    with pytest.raises(ValidationError, match="STORAGE_DIR"):
        ExplainSettings(**BASE)
    with pytest.raises(ValidationError, match="ACCESS_KEY"):
        ExplainSettings(**BASE, s3_endpoint="minio:9000")


def test_store_from_settings(tmp_path: Path) -> None:
    assert isinstance(ExplainSettings(**BASE, storage_dir=tmp_path).object_store(), LocalDirStore)
    s3 = ExplainSettings(
        **BASE, s3_endpoint="minio:9000", s3_access_key="a" * 8, s3_secret_key="b" * 32, s3_secure=False
    ).object_store()
    assert isinstance(s3, S3Store) and s3.bucket == "sightline"


def test_env_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in {
        "MODEL_REPOSITORY": str(REPOSITORY),
        "STORAGE_DIR": str(tmp_path),
        "MAX_BATCH_SIZE": "16",
        "BATCH_WAIT_TIMEOUT_S": "0.05",
        "REPLICAS": "2",
        "NUM_GPUS_PER_REPLICA": "0.5",
    }.items():
        monkeypatch.setenv(f"SIGHTLINE_EXPLAIN_{k}", v)
    s = ExplainSettings(environment="test", telemetry={"exporter": "none"})  # type: ignore[arg-type]
    assert (s.max_batch_size, s.batch_wait_timeout_s, s.replicas, s.num_gpus_per_replica) == (
        16,
        0.05,
        2,
        0.5,
    )


def test_rayservice_import_path_builds_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The chart's ``importPath: sightline_explain.serve:app`` resolves the way Ray resolves it."""
    import importlib

    monkeypatch.setenv("SIGHTLINE_EXPLAIN_MODEL_REPOSITORY", str(REPOSITORY))
    monkeypatch.setenv("SIGHTLINE_EXPLAIN_STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("SIGHTLINE_OTEL_EXPORTER", "none")
    builder = importlib.import_module("sightline_explain.serve").app
    app = call_user_app_builder_with_args_if_necessary(builder, {"environment": "test", "replicas": 3})
    assert isinstance(app, Application)
    deployment = app._bound_deployment
    assert deployment.name == "explain" and deployment.num_replicas == 3
