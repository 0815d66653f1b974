"""``sightline up --with-prometheus``: Debian's prometheus scraping the local stack.

Writes a prometheus.yml with the running stack's ports (the rule files of infra/prometheus/rules)
under ``<data_dir>/prometheus/`` and returns a stack Component that runs ``/usr/bin/prometheus``
on loopback with its TSDB there. Install with scripts/get-prometheus.sh.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from sightline.stack.settings import StackSettings
from sightline.stack.state import Component

RULES = Path(__file__).resolve().parents[3] / "infra" / "prometheus" / "rules"


def scrape_config(settings: StackSettings, rules_dir: Path, interval: str = "15s") -> dict[str, object]:
    """The prometheus.yml for this stack: every service's /metrics and Triton's metrics port.

    ``interval`` is both the scrape and the rule evaluation period.
    """
    host = settings.host
    targets = {
        "sightline-gateway": settings.gateway_port,
        "sightline-deid": settings.deid_port,
        "sightline-preprocess": settings.preprocess_http_port,
        "sightline-explain": settings.explain_port,
        "triton": settings.triton_metrics_port,
    }
    return {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": {"platform": "sightline"},
        },
        "rule_files": [str(rules_dir / "*.yaml")],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [f"{host}:{port}"], "labels": {"component": job.split("-")[-1]}}
                ],
            }
            for job, port in targets.items()
        ],
    }


def prometheus_component(
    settings: StackSettings, port: int = 9090, binary: str | None = None, interval: str = "15s"
) -> Component:
    """A Component running Debian's prometheus against the stack (raises if it is not installed).

    The rule files are copied under ``<data_dir>/prometheus/rules`` (a test may shorten their
    ``for:`` there before starting it).
    """
    exe = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(exe).is_file():
        raise FileNotFoundError("prometheus is not installed (scripts/get-prometheus.sh)")
    home = (settings.data_dir / "prometheus").resolve()
    rules = home / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for path in RULES.glob("*.yaml"):
        shutil.copyfile(path, rules / path.name)
    config = home / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(settings, rules, interval), sort_keys=False))
    address = f"{settings.host}:{port}"
    return Component(
        "prometheus",
        [
            exe,
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={address}",
            "--storage.tsdb.retention.time=2d",
            "--web.enable-lifecycle",
            "--enable-feature=exemplar-storage",  # latency buckets link to trace ids
        ],
        f"http://{address}/-/ready",
        {"http": f"http://{address}"},
    )
