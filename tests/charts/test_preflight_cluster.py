"""The Secret preflight against an API server: a small fake one on loopback that answers the
discovery and GET requests Helm's `lookup` makes (`helm template --dry-run=server`), holding the
namespace and the Secrets each case gives it (issue 14, finding 1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, NAMESPACE, RELEASE, run_helm

pytestmark = pytest.mark.charts

DEFAULT = str(CHART / "ci" / "default-values.yaml")
#: What the default values read (the list the preflight checks; test_preflight.py keeps it whole).
SECRETS = {
    "sightline-database": ["url"],
    "sightline-object-storage": ["access-key", "secret-key"],
    "sightline-gateway": ["jwt-secret"],
    "sightline-deid": ["pseudonym-key"],
}
RESOURCES = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": False,
            "kind": "Namespace",
            "verbs": ["get"],
        },
        {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get"]},
    ],
}


class FakeApi:
    def __init__(self) -> None:
        self.namespace = True
        self.secrets: dict[str, list[str]] = {}

    def answer(self, path: str) -> dict[str, Any] | None:
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if path == "/version":
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
        if path == "/api/v1":
            return RESOURCES
        if path == f"/api/v1/namespaces/{NAMESPACE}" and self.namespace:
            return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets/"
        if path.startswith(prefix) and self.namespace and path[len(prefix) :] in self.secrets:
            name = path[len(prefix) :]
            data = {key: "eA==" for key in self.secrets[name]}
            return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}
        return None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApi, Path]]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = fake.answer(self.path.split("?")[0])
            status = 200 if body is not None else 404
            payload = body or {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
            }
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(payload).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}
                ],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [
                    {"name": "c", "context": {"cluster": "fake", "user": "u", "namespace": NAMESPACE}}
                ],
                "current-context": "c",
            }
        )
    )
    yield fake, config
    server.shutdown()
    thread.join()


def _install_check(config: Path, *sets: str) -> tuple[int, str]:
    args = [
        "template",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "-f",
        DEFAULT,
        "--dry-run=server",
        "--kubeconfig",
        str(config),
    ]
    for item in sets:
        args += ["--set", item]
    result = run_helm(*args, check=False)
    return result.returncode, result.stderr


def test_a_missing_secret_stops_the_install(api: tuple[FakeApi, Path]) -> None:
    fake, config = api
    fake.secrets = {k: v for k, v in SECRETS.items() if k != "sightline-database"}
    code, stderr = _install_check(config)
    assert code != 0 and 'Secret "sightline-database"' in stderr and "database.existingSecret" in stderr, (
        stderr
    )


def test_a_missing_key_stops_the_install(api: tuple[FakeApi, Path]) -> None:
    fake, config = api
    fake.secrets = {**SECRETS, "sightline-deid": ["other"]}
    code, stderr = _install_check(config)
    assert code != 0 and 'has no key "pseudonym-key"' in stderr, stderr


def test_every_secret_present_passes_the_preflight(api: tuple[FakeApi, Path]) -> None:
    fake, config = api
    fake.secrets = dict(SECRETS)
    code, stderr = _install_check(config)
    assert code == 0, stderr


def test_preflight_skipped_when_disabled_or_namespace_not_created_yet(api: tuple[FakeApi, Path]) -> None:
    fake, config = api
    code, stderr = _install_check(config, "preflight.checkSecrets=false")
    assert code == 0, stderr
    fake.namespace = False  # helm install --create-namespace: nothing there to look up yet
    code, stderr = _install_check(config)
    assert code == 0, stderr
