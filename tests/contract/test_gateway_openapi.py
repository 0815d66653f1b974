"""The gateway's OpenAPI is the public contract: fail on drift (UPDATE_SNAPSHOTS=1 refreshes the
snapshot, which must be committed), and fuzz it in-process with schemathesis (bounded) — no
request may get a 5xx."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import in_ci

SNAPSHOT = Path(__file__).parent / "gateway_openapi.json"


def _schema(tmp_path: Path) -> dict:
    from sightline_gateway.app import create_app

    from tests.unit.gateway.gateway_fixtures import settings

    return create_app(settings(tmp_path)).openapi()


def test_openapi_matches_the_snapshot(tmp_path: Path) -> None:
    current = json.dumps(_schema(tmp_path), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(current)
    elif not SNAPSHOT.exists():
        assert not in_ci(), f"no OpenAPI snapshot committed at {SNAPSHOT.name}"
        SNAPSHOT.write_text(current)
        raise AssertionError(f"no OpenAPI snapshot: wrote {SNAPSHOT.name}; review it and commit it")
    assert current == SNAPSHOT.read_text(), "OpenAPI drifted: review, then UPDATE_SNAPSHOTS=1"


def test_every_route_documents_problem_details(tmp_path: Path) -> None:
    for path, ops in _schema(tmp_path)["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            assert "401" in op["responses"] and "404" in op["responses"], f"{method} {path}"


def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    """Bounded fuzzing of every /v1 operation with a valid token: 4xx is fine, 5xx is a bug."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    from tests.unit.gateway.gateway_fixtures import harness, token

    with harness(tmp_path, rate_limit_per_minute=100_000, rate_limit_burst=100_000) as h:
        schema = schemathesis.openapi.from_asgi("/openapi.json", h.client.app)
        auth = token(roles=("submitter", "clinician", "auditor", "admin"))
        calls: dict[str, int] = {}
        for result in schema.include(path_regex="^/v1/").get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15")),
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=operation.as_strategy())
            def run(case) -> None:
                response = case.call(headers=auth)
                calls[case.operation.path] = calls.get(case.operation.path, 0) + 1
                case.validate_response(response, checks=[not_a_server_error])

            run()  # hypothesis raises with the shrunk failing request
        assert len(calls) >= 10 and min(calls.values()) >= 1, calls
