"""The preprocess HTTP app is built per call; KServe's module-level app is left alone."""

from __future__ import annotations

from typing import Any

import kserve.model_server
from fastapi.testclient import TestClient
from sightline_preprocess.app import create_app


class _Transformer:
    def __init__(self, healthy: bool, name: str = "derm-cnn") -> None:
        self._healthy = healthy
        self.name = name

    async def healthy(self) -> bool:
        return self._healthy


def test_health_routes_on_a_new_app_each_time_and_kserve_app_untouched() -> None:
    kserve_routes = [r.path for r in kserve.model_server.app.routes]
    settings: Any = None  # create_app reads nothing from settings yet
    ready = TestClient(create_app(settings, [_Transformer(True)]))  # type: ignore[list-item]
    not_ready = TestClient(create_app(settings, [_Transformer(False)]))  # type: ignore[list-item]
    assert ready.get("/health/live").status_code == 200
    assert ready.get("/health/ready").status_code == 200
    assert not_ready.get("/health/ready").status_code == 503
    assert [r.path for r in kserve.model_server.app.routes] == kserve_routes


def test_not_ready_while_any_served_model_is_not() -> None:
    """Two models: ready needs both; the failing check names the model."""
    settings: Any = None
    both = [_Transformer(True, "derm-cnn"), _Transformer(False, "cxr-pneumonia")]
    response = TestClient(create_app(settings, both)).get("/health/ready")  # type: ignore[arg-type]
    assert response.status_code == 503
    assert "triton-model:cxr-pneumonia" in response.text
