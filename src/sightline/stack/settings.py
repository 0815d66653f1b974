"""Settings of the local stack: ports, paths and options of ``sightline up`` (env ``SIGHTLINE_STACK_``)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sightline_common.settings import TraceExporter


class StackSettings(BaseSettings):
    """Ports and paths of the local stack. Every port is a setting; none may collide."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_STACK_", extra="forbid")

    data_dir: Path = Path("var/stack")
    model_repository: Path = Path("model_repository")
    #: The models served (Triton, preprocess, explain, gateway); empty: every model with a manifest
    #: in the repository.
    models: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    preprocess_http_port: int = 8011
    preprocess_grpc_port: int = 8012
    deid_port: int = 8020
    explain_port: int = 8030
    gateway_port: int = 8080
    receiver_port: int = 8040
    receiver_dicom_port: int = 11112
    #: Calling AE titles the receiver takes studies from (DCMTK's defaults), as the development tenant.
    receiver_calling_ae_titles: list[str] = Field(default_factory=lambda: ["STORESCU", "ECHOSCU"])
    prometheus_port: int = 9090
    with_prometheus: bool = False
    otel_exporter: TraceExporter = "jsonl"
    otel_otlp_endpoint: str | None = None
    #: With the JSON-lines exporter, Triton's OTLP spans reach the trace file through this sink.
    otlp_sink_port: int = 8050
    deid_recipe: str = "sightline-basic"
    ready_timeout_s: float = Field(default=240.0, gt=0)
    explain_object_store_mb: int = 128
    #: How often the gateway recomputes its real-world performance gauges from confirmed outcomes.
    outcome_metrics_interval_s: float = Field(default=60.0, gt=0)
    #: The gateway's per-client rate limit (benchmarks that submit at full speed raise it).
    gateway_rate_limit_per_minute: int = Field(default=600, ge=1)
    gateway_rate_limit_burst: int = Field(default=60, ge=1)
    #: Jobs the gateway's in-process worker runs at once.
    gateway_worker_concurrency: int = Field(default=4, ge=1, le=256)
    #: Sync studies the gateway runs at once in its own process rather than through its queue.
    gateway_sync_direct_jobs: int = Field(default=8, ge=0, le=256)
    #: The development tenant's PACS as a STOW-RS URL (e.g. a local Orthanc's
    #: http://127.0.0.1:8042/dicom-web/studies): its results are re-identified and filed there, and
    #: its studies' original identifiers are kept sealed under a key file of the data directory.
    #: None: no way back, nothing kept.
    pacs_stow_url: str | None = Field(default=None, pattern=r"^https?://")

    @model_validator(mode="after")
    def _ports_unique(self) -> StackSettings:
        ports = [v for k, v in self.__dict__.items() if k.endswith("_port")]
        if len(ports) != len(set(ports)):
            raise ValueError(f"stack ports collide: {sorted(ports)}")
        return self

    @property
    def state_file(self) -> Path:
        return self.data_dir / "stack.json"


def free_loopback_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports free on ``host`` now (held open together so that none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def settings_on_free_ports(data_dir: Path, **overrides: object) -> StackSettings:
    """Stack settings with every port a free loopback port: tests and benchmarks beside a running stack."""
    names = [name for name in StackSettings.model_fields if name.endswith("_port")]
    ports = dict(zip(names, free_loopback_ports(len(names)), strict=True))
    return StackSettings.model_validate({"data_dir": data_dir, **ports, **overrides})
