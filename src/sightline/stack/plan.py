"""The plan of the local stack: each component's command, readiness URL and environment.

Each first-party service gets its own Settings object (its own class, validated here), written
to its environment under its own env prefix; Triton gets its command line.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sightline_common.manifest import load_manifest
from sightline_common.model_repository import served_models
from sightline_common.settings import ServiceSettings, TelemetrySettings
from sightline_deid.settings import DeidSettings
from sightline_explain.settings import ExplainSettings
from sightline_gateway.settings import GatewaySettings, PacsDestination
from sightline_preprocess.settings import PreprocessSettings
from sightline_receiver.settings import ReceiverSettings, TenantSenders

from sightline.stack.env import build_settings, settings_env
from sightline.stack.prometheus import prometheus_component
from sightline.stack.settings import StackSettings
from sightline.stack.state import Component
from sightline.triton import prepare_backends, triton_command, triton_environment

#: Environment every first-party service gets besides its settings.
PROCESS_ENV = {"PYTHONUNBUFFERED": "1"}
#: ... and per service. The gateway allocates from many threads (aiosqlite runs one per pooled
#: connection, plus the worker threads); glibc gives each its own arena, and memory freed in one
#: stays resident there. Two arenas: RSS flat over a 30-minute soak where it stepped +5.3%
#: (README, reliability; the gateway image sets the same).
SERVICE_ENV = {"gateway": {"MALLOC_ARENA_MAX": "2"}}
#: The tenant of development tokens (``sightline up`` prints one) and of the receiver's modalities.
DEV_TENANT = "dev-hospital"


@dataclass(frozen=True)
class DevSecrets:
    """Random development secrets of one data directory."""

    pseudonym_key: str
    jwt_secret: str


def dev_secrets(data_dir: Path) -> DevSecrets:
    """Random development secrets, created once per data directory (mode 0600)."""
    path = data_dir / "secrets.json"
    if path.exists():
        values = dict(json.loads(path.read_text()))
    else:
        values = {"pseudonym_key": secrets.token_urlsafe(32), "jwt_secret": secrets.token_urlsafe(32)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh)
    return DevSecrets(pseudonym_key=values["pseudonym_key"], jwt_secret=values["jwt_secret"])


def receiver_credential(data_dir: Path, keys: DevSecrets, ttl_s: int = 30 * 24 * 3600) -> Path:
    """A development token (submitter of DEV_TENANT) with which the receiver hands studies to the gateway.

    Written at each plan (mode 0600); in a cluster the credential is an API key from a Secret.
    """
    from sightline_gateway.core.auth import mint_dev_token

    token = mint_dev_token(
        keys.jwt_secret,
        "sightline-dev",
        "sightline",
        DEV_TENANT,
        ["submitter"],
        ttl_s,
        subject="dicom-receiver",
    )
    path = data_dir / "receiver-credential"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return path


def receiver_spool_key(data_dir: Path) -> Path:
    """The receiver's spool key (32 random bytes, base64-encoded; mode 0600), made once per data
    directory: another key would leave what is spooled unreadable. In a cluster it comes from a Secret.
    """
    path = data_dir / "receiver-spool.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return path


def gateway_tenant_keys(data_dir: Path) -> Path:
    """The development tenant's re-identification key file (JSON: tenant -> 32 random bytes, base64;
    mode 0600), made once per data directory: another key would leave the kept records unopenable.
    In a cluster it comes from a Secret (``pacsForwarding.tenantKeySecret``).
    """
    path = data_dir / "tenant-keys.json"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        json.dump({DEV_TENANT: base64.b64encode(secrets.token_bytes(32)).decode()}, fh)
    return path


def pacs_forwarding(settings: StackSettings, data_dir: Path) -> dict[str, Any]:
    """The gateway settings of the way back: the development tenant's PACS and its key, if it has one."""
    if settings.pacs_stow_url is None:
        return {}
    return {
        "pacs_destinations": {DEV_TENANT: PacsDestination(name="dev-pacs", stow_url=settings.pacs_stow_url)},
        "reidentification_keys_file": gateway_tenant_keys(data_dir),
    }


def telemetry_settings(settings: StackSettings) -> TelemetrySettings:
    """Where every service of the stack sends its traces (a JSON-lines file by default)."""
    return build_settings(
        TelemetrySettings,
        exporter=settings.otel_exporter,
        traces_file=settings.data_dir.resolve() / "traces.jsonl",
        otlp_endpoint=settings.otel_otlp_endpoint,
    )


def service_settings(settings: StackSettings, keys: DevSecrets) -> dict[str, ServiceSettings]:
    """Each first-party service's own settings for this stack, by component name, in start order."""
    data = settings.data_dir.resolve()
    repo = settings.model_repository.resolve()
    host = settings.host
    telemetry = telemetry_settings(settings)
    models = served_models(repo, settings.models)
    return {
        "preprocess": build_settings(
            PreprocessSettings,
            environment="development",
            telemetry=telemetry,
            host=host,
            port=settings.preprocess_http_port,
            grpc_port=settings.preprocess_grpc_port,
            triton_grpc=f"{host}:{settings.triton_grpc_port}",
            model_repository=repo,
            models=models,
        ),
        "deid": build_settings(
            DeidSettings,
            environment="development",
            telemetry=telemetry,
            host=host,
            port=settings.deid_port,
            recipe=settings.deid_recipe,
            pseudonym_key=SecretStr(keys.pseudonym_key),
        ),
        "explain": build_settings(
            ExplainSettings,
            environment="development",
            telemetry=telemetry,
            host=host,
            port=settings.explain_port,
            model_repository=repo,
            models=models,
            storage_dir=data / "objects",
            ray_object_store_mb=settings.explain_object_store_mb,
        ),
        "gateway": build_settings(
            GatewaySettings,
            environment="development",
            telemetry=telemetry,
            host=host,
            port=settings.gateway_port,
            database_url=f"sqlite+aiosqlite:///{data / 'sightline.db'}",
            storage_dir=data / "objects",
            deid_url=f"http://{host}:{settings.deid_port}",
            preprocess_grpc=f"{host}:{settings.preprocess_grpc_port}",
            preprocess_http=f"http://{host}:{settings.preprocess_http_port}",
            explain_url=f"http://{host}:{settings.explain_port}",
            model_repository=repo,
            models=models,
            jwt_secret=keys.jwt_secret,
            drift_observations_file=data / "drift-observations.jsonl",
            outcome_metrics_interval_s=settings.outcome_metrics_interval_s,
            rate_limit_per_minute=settings.gateway_rate_limit_per_minute,
            rate_limit_burst=settings.gateway_rate_limit_burst,
            worker_concurrency=settings.gateway_worker_concurrency,
            sync_direct_jobs=settings.gateway_sync_direct_jobs,
            **pacs_forwarding(settings, data),
        ),
        "receiver": build_settings(
            ReceiverSettings,
            environment="development",
            telemetry=telemetry,
            host=host,
            port=settings.receiver_port,
            dicom_port=settings.receiver_dicom_port,
            gateway_url=f"http://{host}:{settings.gateway_port}",
            tenants=[
                TenantSenders(
                    tenant=DEV_TENANT,
                    calling_ae_titles=settings.receiver_calling_ae_titles,
                    credential_file=receiver_credential(data, keys),
                )
            ],
            spool_dir=data / "receiver-spool",
            spool_key_file=receiver_spool_key(data),
            # What the served models declare: a modality sends nothing no model could take.
            sop_classes=sorted(
                {c for m in models for c in load_manifest(repo, m).preprocessing.accepted_sop_classes}
            ),
        ),
    }


def service_component(name: str, settings: ServiceSettings) -> Component:
    """``python -m sightline_<name>`` configured by ``settings`` (its env vars), ready on /health/ready."""
    base = f"http://{settings.host}:{settings.port}"
    listens = {"http": base}
    if isinstance(settings, PreprocessSettings):
        listens["grpc"] = f"{settings.host}:{settings.grpc_port}"
    if isinstance(settings, ReceiverSettings):
        listens["dicom"] = f"{settings.host}:{settings.dicom_port} (AE {settings.ae_title})"
    return Component(
        name,
        [sys.executable, "-m", f"sightline_{name}"],
        f"{base}/health/ready",
        listens,
        env={**settings_env(settings), **PROCESS_ENV, **SERVICE_ENV.get(name, {})},
    )


def triton_otlp_url(settings: StackSettings) -> str | None:
    """Where Triton sends its spans: the collector (otlp-http), the JSON-lines sink (jsonl), or nowhere."""
    if settings.otel_exporter == "otlp-http":
        return settings.otel_otlp_endpoint
    if settings.otel_exporter == "jsonl":
        return f"http://{settings.host}:{settings.otlp_sink_port}/v1/traces"
    return None


def otlp_sink_component(settings: StackSettings) -> Component:
    """The OTLP/HTTP receiver that appends Triton's spans to the stack's trace file (jsonl exporter)."""
    address = f"{settings.host}:{settings.otlp_sink_port}"
    traces = telemetry_settings(settings).traces_file
    command = [sys.executable, "-m", "sightline.stack.otlp_sink", "--host", settings.host]
    command += ["--port", str(settings.otlp_sink_port), "--traces-file", str(traces)]
    return Component(
        "otlp-sink",
        command,
        f"http://{address}/health/live",
        {"otlp-http": f"http://{address}/v1/traces"},
        env=dict(PROCESS_ENV),
    )


def triton_component(settings: StackSettings, shm_prefix: str) -> Component:
    """The real tritonserver (CPU, python backend) serving every model of the model repository."""
    host = settings.host
    install = prepare_backends(settings.data_dir.resolve() / "triton-backends")
    return Component(
        "triton",
        triton_command(
            install,
            settings.model_repository.resolve(),
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            host=host,
            shm_prefix=shm_prefix,
            otlp_http_url=triton_otlp_url(settings),
        ),
        # Strict readiness: ready once every model of the repository is loaded.
        f"http://{host}:{settings.triton_http_port}/v2/health/ready",
        {
            "http": f"http://{host}:{settings.triton_http_port}",
            "grpc": f"{host}:{settings.triton_grpc_port}",
            "metrics": f"http://{host}:{settings.triton_metrics_port}/metrics",
        },
        env=triton_environment(install, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}),
    )


def plan(settings: StackSettings, shm_prefix: str) -> list[Component]:
    """The components in start order, with their commands and environments."""
    services = service_settings(settings, dev_secrets(settings.data_dir.resolve()))
    components = [otlp_sink_component(settings)] if settings.otel_exporter == "jsonl" else []
    components.append(triton_component(settings, shm_prefix))
    components += [service_component(name, svc) for name, svc in services.items()]
    if settings.with_prometheus:
        components.append(prometheus_component(settings, port=settings.prometheus_port))
    return components
