"""Prometheus metrics of the de-identification service (counts only, never values)."""

from __future__ import annotations

from prometheus_client import Counter

ACTIONS = Counter(
    "sightline_deid_actions_total",
    "De-identification actions applied to attributes, by PS3.15 action code.",
    ["action"],
)
OUTCOMES = Counter(
    "sightline_deid_requests_total",
    "De-identification requests by outcome (ok or the refusal reason).",
    ["outcome"],
)
