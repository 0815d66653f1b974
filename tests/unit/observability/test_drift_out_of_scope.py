"""The out-of-scope flag in the drift metrics: counted per segment, its share over the window published."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sightline_common.drift import DriftMonitor, Reference


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_flags_are_counted_and_a_site_sending_out_of_scope_images_shows_in_its_share() -> None:
    reference = Reference.from_samples({"brightness": [0.4 + 0.001 * i for i in range(200)]})
    monitor = DriftMonitor(window=100, min_count=50, every=10)
    monitor.register_reference("oos-model", 1, reference)
    labels = {"model": "oos-model", "version": "1"}
    before = _sample("sightline_model_out_of_scope_results_total", **labels, segment="site-b", flagged="true")
    for i in range(100):
        stats = {"brightness": 0.5}
        monitor.observe("oos-model", 1, stats, 0.3, False, segment="site-a", out_of_scope=i % 50 == 0)
        monitor.observe("oos-model", 1, stats, 0.3, False, segment="site-b", out_of_scope=i % 4 == 0)
    after = _sample("sightline_model_out_of_scope_results_total", **labels, segment="site-b", flagged="true")
    assert after - before == 25
    assert monitor.current_out_of_scope_share("oos-model", 1, "site-a") == 0.02
    assert monitor.current_out_of_scope_share("oos-model", 1, "site-b") == 0.25
    assert _sample("sightline_drift_out_of_scope_share", **labels, segment="site-b") == 0.25
    assert _sample("sightline_drift_out_of_scope_share", **labels, segment="site-a") == 0.02


def test_a_model_without_the_score_publishes_no_share() -> None:
    reference = Reference.from_samples({"brightness": [0.4 + 0.001 * i for i in range(200)]})
    monitor = DriftMonitor(window=100, min_count=50, every=10)
    monitor.register_reference("plain-model", 1, reference)
    for _ in range(60):
        monitor.observe("plain-model", 1, {"brightness": 0.5}, 0.3, False, segment="site-a")
    assert monitor.current_out_of_scope_share("plain-model", 1, "site-a") is None
    assert (
        REGISTRY.get_sample_value(
            "sightline_drift_out_of_scope_share",
            {"model": "plain-model", "version": "1", "segment": "site-a"},
        )
        is None
    )
