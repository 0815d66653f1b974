"""The Ray Serve entry point for a RayService: ``importPath: sightline_explain.serve:app``.

``app`` is an application builder: Ray calls it with the ``args`` of the Serve config when it
imports the path, so settings are read from the environment (and those args) at deploy time,
not at import time.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from sightline_explain.app import build_deployment
from sightline_explain.settings import ExplainSettings


def app(args: dict[str, Any]) -> Application:
    """The bound explanation application from ``SIGHTLINE_EXPLAIN_*`` env (args override)."""
    return build_deployment(ExplainSettings(**args))
