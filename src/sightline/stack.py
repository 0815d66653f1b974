"""The whole Sightline stack on one machine, on loopback, under one data directory.

Starts the real ``tritonserver`` (CPU, python backend), preprocess (KServe ModelServer), deid,
explain (Ray Serve) and the gateway as child processes, each in its own process group and
tagged with a stack id in its environment so that ``down`` can find every descendant (Ray
starts its own daemons) and leave no orphan and no shared-memory file behind.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sightline.triton import prepare_backends, triton_command, triton_environment

STACK_ENV = "SIGHTLINE_STACK_ID"


class StackSettings(BaseSettings):
    """Ports and paths of the local stack. Every port is a setting; none may collide."""

    model_config = SettingsConfigDict(env_prefix="SIGHTLINE_STACK_", extra="forbid")

    data_dir: Path = Path("var/stack")
    model_repository: Path = Path("model_repository")
    model_name: str = "derm-cnn"
    host: str = "127.0.0.1"
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    preprocess_http_port: int = 8011
    preprocess_grpc_port: int = 8012
    deid_port: int = 8020
    explain_port: int = 8030
    gateway_port: int = 8080
    prometheus_port: int = 9090
    with_prometheus: bool = False
    otel_exporter: str = Field(default="jsonl", description="jsonl, otlp-grpc, otlp-http, console or none")
    otel_otlp_endpoint: str | None = None
    deid_recipe: str = "sightline-basic"
    ready_timeout_s: float = Field(default=240.0, gt=0)
    explain_object_store_mb: int = 128

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
    import socket

    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def settings_on_free_ports(data_dir: Path, **overrides: object) -> StackSettings:
    """Stack settings with every port a free loopback port: tests and benchmarks beside a running stack."""
    names = [name for name in StackSettings.model_fields if name.endswith("_port")]
    ports = dict(zip(names, free_loopback_ports(len(names)), strict=True))
    return StackSettings(data_dir=data_dir, **{**ports, **overrides})  # type: ignore[arg-type]


@dataclass
class Component:
    """One process of the stack and how to tell that it is ready."""

    name: str
    command: list[str]
    ready_url: str
    listens: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    pid: int | None = None


@dataclass
class StackState:
    stack_id: str
    shm_prefix: str
    components: list[Component]

    def save(self, path: Path) -> None:
        path.write_text(
            json.dumps(asdict(self) | {"components": [_public(c) for c in self.components]}, indent=2)
        )

    @classmethod
    def load(cls, path: Path) -> StackState:
        raw = json.loads(path.read_text())
        comps = [Component(**c) for c in raw["components"]]
        return cls(raw["stack_id"], raw["shm_prefix"], comps)


def _public(c: Component) -> dict[str, object]:
    """A component without its environment (which holds secrets) for the state file."""
    d = asdict(c)
    d["env"] = {}
    return d


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    """Random development secrets, created once per data directory (mode 0600)."""
    path = data_dir / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    values = {"pseudonym_key": secrets.token_urlsafe(32), "jwt_secret": secrets.token_urlsafe(32)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def plan(settings: StackSettings, stack_id: str, shm_prefix: str) -> list[Component]:
    """The components in start order, with their commands and environments."""
    data = settings.data_dir.resolve()
    repo = settings.model_repository.resolve()
    host = settings.host
    py = sys.executable
    keys = _dev_secrets(data)
    common = {
        "SIGHTLINE_OTEL_EXPORTER": settings.otel_exporter,
        "SIGHTLINE_OTEL_TRACES_FILE": str(data / "traces.jsonl"),
        "PYTHONUNBUFFERED": "1",
    }
    if settings.otel_otlp_endpoint:
        common["SIGHTLINE_OTEL_OTLP_ENDPOINT"] = settings.otel_otlp_endpoint

    def svc(prefix: str, **values: object) -> dict[str, str]:
        env = dict(common)
        env.update({f"SIGHTLINE_{prefix}_{k.upper()}": str(v) for k, v in values.items()})
        return env

    install = prepare_backends(data / "triton-backends")
    triton = Component(
        "triton",
        triton_command(
            install,
            repo,
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            host=host,
            shm_prefix=shm_prefix,
            otlp_http_url=settings.otel_otlp_endpoint if settings.otel_exporter == "otlp-http" else None,
        ),
        f"http://{host}:{settings.triton_http_port}/v2/models/{settings.model_name}/ready",
        {
            "http": f"http://{host}:{settings.triton_http_port}",
            "grpc": f"{host}:{settings.triton_grpc_port}",
            "metrics": f"http://{host}:{settings.triton_metrics_port}/metrics",
        },
        env=triton_environment(install, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}),
    )
    preprocess = Component(
        "preprocess",
        [py, "-m", "sightline_preprocess"],
        f"http://{host}:{settings.preprocess_http_port}/health/ready",
        {
            "http": f"http://{host}:{settings.preprocess_http_port}",
            "grpc": f"{host}:{settings.preprocess_grpc_port}",
        },
        env=svc(
            "PREPROCESS",
            environment="development",
            host=host,
            port=settings.preprocess_http_port,
            grpc_port=settings.preprocess_grpc_port,
            triton_grpc=f"{host}:{settings.triton_grpc_port}",
            model_repository=repo,
            model_name=settings.model_name,
        ),
    )
    deid = Component(
        "deid",
        [py, "-m", "sightline_deid"],
        f"http://{host}:{settings.deid_port}/health/ready",
        {"http": f"http://{host}:{settings.deid_port}"},
        env=svc(
            "DEID",
            environment="development",
            host=host,
            port=settings.deid_port,
            recipe=settings.deid_recipe,
            pseudonym_key=keys["pseudonym_key"],
        ),
    )
    explain = Component(
        "explain",
        [py, "-m", "sightline_explain"],
        f"http://{host}:{settings.explain_port}/health/ready",
        {"http": f"http://{host}:{settings.explain_port}"},
        env=svc(
            "EXPLAIN",
            environment="development",
            host=host,
            port=settings.explain_port,
            model_repository=repo,
            model_name=settings.model_name,
            storage_dir=data / "objects",
            ray_object_store_mb=settings.explain_object_store_mb,
        ),
    )
    gateway = Component(
        "gateway",
        [py, "-m", "sightline_gateway"],
        f"http://{host}:{settings.gateway_port}/health/ready",
        {"http": f"http://{host}:{settings.gateway_port}"},
        env=svc(
            "GATEWAY",
            environment="development",
            host=host,
            port=settings.gateway_port,
            database_url=f"sqlite+aiosqlite:///{data / 'sightline.db'}",
            storage_dir=data / "objects",
            deid_url=f"http://{host}:{settings.deid_port}",
            preprocess_grpc=f"{host}:{settings.preprocess_grpc_port}",
            preprocess_http=f"http://{host}:{settings.preprocess_http_port}",
            explain_url=f"http://{host}:{settings.explain_port}",
            model_repository=repo,
            jwt_secret=keys["jwt_secret"],
            drift_observations_file=data / "drift-observations.jsonl",
        ),
    )
    components = [triton, preprocess, deid, explain, gateway]
    if settings.with_prometheus:
        from sightline.prometheus_local import prometheus_component

        components.append(prometheus_component(settings, port=settings.prometheus_port))
    return components


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def tagged_processes(stack_id: str) -> list[int]:
    """Every process whose environment carries this stack id (children, Ray daemons, stubs)."""
    needle = f"{STACK_ENV}={stack_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return [p for p in found if _alive(p)]


def shm_files(prefix: str) -> list[Path]:
    shm = Path("/dev/shm")
    return sorted(shm.glob(f"{prefix}*")) if shm.is_dir() else []


class Stack:
    """Start, watch and stop the local stack."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.logs = settings.data_dir / "logs"

    def running_state(self) -> StackState | None:
        path = self.settings.state_file
        if not path.exists():
            return None
        state = StackState.load(path)
        return state if any(_alive(c.pid) for c in state.components) else None

    def start(
        self,
        on_progress: Callable[[str, str], None] = lambda name, status: None,
        only: Iterable[str] | None = None,
    ) -> StackState:
        """Start every component and wait for each to be ready; stop all on failure."""
        if self.running_state() is not None:
            raise RuntimeError(f"a stack is already running from {self.settings.data_dir} (sightline down)")
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        stack_id = secrets.token_hex(8)
        state = StackState(stack_id, f"sightline_{stack_id}_", [])
        wanted = set(only) if only else None
        components = [
            c for c in plan(self.settings, stack_id, state.shm_prefix) if not wanted or c.name in wanted
        ]
        try:
            for comp in components:
                self._spawn(comp, state)
                state.components.append(comp)
                state.save(self.settings.state_file)
                on_progress(comp.name, "starting")
                self._wait_ready(comp, on_progress)
                on_progress(comp.name, "ready")
        except BaseException:
            self.stop(state)
            raise
        return state

    def _spawn(self, comp: Component, state: StackState) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
        for key in ("PYDICOM_DATA_DIR", "TMPDIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(comp.env)
        if comp.name != "triton":
            env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env["PATH"]))
        env[STACK_ENV] = state.stack_id
        log = (self.logs / f"{comp.name}.log").open("ab")
        proc = subprocess.Popen(
            comp.command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.settings.data_dir,
        )
        log.close()
        comp.pid = proc.pid

    def _wait_ready(self, comp: Component, on_progress: Callable[[str, str], None]) -> None:
        deadline = time.monotonic() + self.settings.ready_timeout_s
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not _alive(comp.pid):
                raise RuntimeError(
                    f"{comp.name} exited during start-up; see {self.logs / (comp.name + '.log')}"
                )
            if http_ok(comp.ready_url):
                return
            on_progress(comp.name, f"waiting {time.monotonic() - started:.0f}s")
            time.sleep(0.5)
        raise RuntimeError(f"{comp.name} not ready after {self.settings.ready_timeout_s:.0f}s")

    def stop(self, state: StackState | None = None, grace_s: float = 20.0) -> list[str]:
        """Stop every process of the stack (reverse order), then its descendants and shm files."""
        state = state or (
            StackState.load(self.settings.state_file) if self.settings.state_file.exists() else None
        )
        if state is None:
            return []
        stopped = []
        for comp in reversed(state.components):
            if comp.pid is not None and _alive(comp.pid):
                try:
                    os.killpg(comp.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + grace_s
                while _alive(comp.pid) and time.monotonic() < deadline:
                    _reap(comp.pid)
                    time.sleep(0.2)
                if _alive(comp.pid):
                    os.killpg(comp.pid, signal.SIGKILL)
                _reap(comp.pid)
                stopped.append(comp.name)
        # Whatever escaped its process group (Ray daemons, python stubs) carries the stack id.
        deadline = time.monotonic() + 10
        while (left := tagged_processes(state.stack_id)) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 5 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(pid)
            time.sleep(0.3)
        for path in shm_files(state.shm_prefix):
            path.unlink(missing_ok=True)
        self.settings.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[dict[str, object]]:
        if not self.settings.state_file.exists():
            return []
        state = StackState.load(self.settings.state_file)
        return [
            {
                "name": c.name,
                "pid": c.pid,
                "alive": _alive(c.pid),
                "ready": _alive(c.pid) and http_ok(c.ready_url),
                "listens": c.listens,
            }
            for c in state.components
        ]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def kill_component(settings: StackSettings, name: str) -> None:
    """Kill one component abruptly (SIGKILL to its process group), as a crash would."""
    state = StackState.load(settings.state_file)
    comp = next(c for c in state.components if c.name == name)
    if comp.pid is not None and _alive(comp.pid):
        os.killpg(comp.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(comp.pid) and time.monotonic() < deadline:
            _reap(comp.pid)
            time.sleep(0.1)


def restart_component(stack: Stack, name: str) -> None:
    """Start one component again with its planned command (after a crash) and wait for it."""
    state = StackState.load(stack.settings.state_file)
    fresh = {c.name: c for c in plan(stack.settings, state.stack_id, state.shm_prefix)}[name]
    for i, comp in enumerate(state.components):
        if comp.name == name:
            if _alive(comp.pid):
                raise RuntimeError(f"{name} is still running")
            stack._spawn(fresh, state)
            state.components[i] = fresh
            state.save(stack.settings.state_file)
            stack._wait_ready(fresh, lambda *_: None)
            return
    raise KeyError(name)
