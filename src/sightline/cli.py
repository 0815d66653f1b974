"""The ``sightline`` command: the local stack (up, down, status) and the model's life cycle."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sightline.stack import Stack, StackSettings
from sightline.stack.state import ExitRecord
from sightline.stack.watch import Supervisor, restart

app = typer.Typer(help="Sightline: assistive medical-image diagnostics, served locally or on Kubernetes.")
console = Console()


def _settings(data_dir: Path | None, **overrides: object) -> StackSettings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir:
        values["data_dir"] = data_dir
    return StackSettings.model_validate(values)


def _model_line(settings: StackSettings) -> str:
    """One line per served model: name, version, and a warning for a placeholder."""
    from sightline_common.errors import NotFound
    from sightline_common.model_repository import served_models

    try:
        names = served_models(settings.model_repository, settings.models)
    except NotFound as exc:
        return f"models: {exc.detail}"
    lines = []
    for name in names:
        manifest = json.loads((settings.model_repository / name / "manifest.json").read_text())
        tag = (
            " [bold red]PLACEHOLDER (random weights, outputs mean nothing)[/]"
            if manifest.get("placeholder")
            else ""
        )
        lines.append(f"model {manifest['name']} v{manifest['version']}{tag}")
    return "\n".join(lines)


def _status_table(rows: list[dict[str, object]]) -> Table:
    table = Table(title="Sightline stack")
    for col in ("component", "pid", "state", "restarts", "last exit", "listens"):
        table.add_column(col)
    now = time.time()
    for row in rows:
        restart_at = row.get("restart_at")
        if row["ready"]:
            state = "[green]ready[/]"
        elif row["alive"]:
            state = "[yellow]not ready[/]"
        elif isinstance(restart_at, float):
            state = f"[red]down[/], restart in {max(0.0, restart_at - now):.0f}s"
        else:
            state = "[red]down[/]"
        last = row.get("last_exit")
        last_exit = f"{last.describe()}, {_ago(now - last.at)} ago" if isinstance(last, ExitRecord) else ""
        listens = "  ".join(f"{k} {v}" for k, v in dict(row["listens"]).items())  # type: ignore[call-overload]
        table.add_row(
            str(row["name"]), str(row["pid"]), state, str(row.get("restarts", 0)), last_exit, listens
        )
    return table


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"


DEV_TENANT = "dev-hospital"
DEV_ROLES = ("submitter", "clinician", "auditor", "admin")
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _dev_token(settings: StackSettings, ttl_s: int = 8 * 3600) -> str:
    """A development bearer token for the local gateway (HS256 with this data dir's secret)."""
    from sightline_gateway.core.auth import mint_dev_token

    secret = json.loads((settings.data_dir / "secrets.json").read_text())["jwt_secret"]
    return mint_dev_token(secret, "sightline-dev", "sightline", DEV_TENANT, list(DEV_ROLES), ttl_s)


def _demo(settings: StackSettings, token: str) -> None:
    """Submit one committed sample per reference model through the gateway and print what a
    hospital gets back: a dermoscopy photograph (HAM10000) and a chest X-ray (DX DICOM)."""
    from sightline.demo import demo_samples, run_demo

    out_dir = settings.data_dir / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    for sample in demo_samples():
        source = "chest X-ray, CC BY 4.0" if sample.suffix == ".dcm" else "HAM10000, CC BY-NC-SA 4.0"
        console.print(f"submitting sample {sample.name} ({source}) ...")
        demo = run_demo(f"http://{settings.host}:{settings.gateway_port}", token, sample, out_dir=out_dir)
        result = demo["result"]
        table = Table(title="Sample result (assistive, preliminary until a clinician reviews it)")
        table.add_column("field")
        table.add_column("value")
        for key in ("status", "model", "probability", "threshold", "decision", "preliminary", "trace_id"):
            if key in result:
                table.add_row(
                    key, json.dumps(result[key]) if isinstance(result[key], dict | list) else str(result[key])
                )
        console.print(table)
        for key in ("statement", "warning"):
            if result.get(key):
                console.print(f"[italic]{result[key]}[/]")
        console.print(f"study: {demo['study_url']}")
        if demo.get("overlay_png"):
            console.print(f"Grad-CAM overlay: {demo['overlay_png']}")


@app.command()
def up(
    data_dir: Path = typer.Option(
        None, help="data directory (default var/stack or SIGHTLINE_STACK_DATA_DIR)"
    ),
    detach: bool = typer.Option(False, help="return once ready and leave the stack running"),
    with_prometheus: bool = typer.Option(False, help="also run Debian's prometheus scraping the stack"),
    demo: bool = typer.Option(False, help="submit a sample image once ready and print the result"),
) -> None:
    """Start the whole stack on loopback and wait until every component is ready."""
    settings = _settings(data_dir, with_prometheus=with_prometheus or None)
    stack = Stack(settings)
    progress: dict[str, str] = {}

    def render() -> Table:
        table = Table(title="Starting Sightline")
        table.add_column("component")
        table.add_column("status")
        for name, status in progress.items():
            table.add_row(name, status)
        return table

    t0 = time.monotonic()
    with Live(render(), console=console, refresh_per_second=4, transient=False) as live:

        def on_progress(name: str, status: str) -> None:
            progress[name] = status
            live.update(render())

        try:
            state = stack.start(on_progress)
        except (RuntimeError, KeyboardInterrupt) as exc:
            console.print(f"[red]start-up failed:[/] {exc}")
            raise typer.Exit(1) from exc
    stop_requested = threading.Event()
    if not detach:
        # From here a Ctrl-C (or SIGTERM) asks the supervisor to stop the stack. Installed only
        # once "press Ctrl-C" was printed, one arriving in between ended the process with every
        # component left running (exit 130; seen in CI). A handler, not a blocked signal mask: a
        # process-directed signal goes to any thread that does not block it (threads started
        # before the mask, such as the start-up display's), and then still interrupted the main
        # thread (exit 130 again, seen in CI); a Python handler always runs in the main thread.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop_requested.set())
    console.print(_status_table(stack.status()))
    console.print(_model_line(settings))
    console.print(
        f"all components ready in {time.monotonic() - t0:.1f}s; data in {settings.data_dir.resolve()}"
    )
    token = _dev_token(settings)
    console.print(f"development token (tenant {DEV_TENANT}, all roles, 8 h; refused outside development):")
    console.print(token, soft_wrap=True)
    console.print(
        f"review workstation: http://{settings.host}:{settings.gateway_port}/review/ "
        "(development login: any user, tenant dev-hospital, role clinician)"
    )
    if demo:
        try:
            _demo(settings, token)
        except Exception as exc:  # noqa: BLE001 - the stack stays up; say what failed
            console.print(f"[red]sample diagnosis failed:[/] {exc}")
    if detach:
        console.print(
            "running in the background, unsupervised (a component that exits stays down; "
            "`sightline restart <component>`): `sightline status`, `sightline down`"
        )
        return
    console.print("supervising (a component that exits is restarted with backoff); press Ctrl-C to stop")
    supervisor = Supervisor(stack, state)
    supervisor.run(stop_requested.wait)
    console.print("stopping...")
    stack.stop(supervisor.state)
    console.print("stopped")


@app.command()
def down(data_dir: Path = typer.Option(None, help="data directory of the running stack")) -> None:
    """Stop everything `sightline up` started (processes and shared memory)."""
    stopped = Stack(_settings(data_dir)).stop()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(data_dir: Path = typer.Option(None, help="data directory of the running stack")) -> None:
    """Report each component: process, readiness, addresses; and the model served."""
    settings = _settings(data_dir)
    rows = Stack(settings).status()
    if not rows:
        console.print("no stack is running")
        raise typer.Exit(3)
    console.print(_status_table(rows))
    console.print(_model_line(settings))
    if not all(r["ready"] for r in rows):
        raise typer.Exit(1)


@app.command("restart")
def restart_command(
    component: str = typer.Argument(help="triton, preprocess, deid, explain, gateway (or prometheus)"),
    data_dir: Path = typer.Option(None, help="data directory of the running stack"),
) -> None:
    """Stop one component and start it again; return once it is ready."""
    settings = _settings(data_dir)
    stack = Stack(settings)
    if stack.running_state() is None:
        console.print("no stack is running")
        raise typer.Exit(3)
    t0 = time.monotonic()
    try:
        comp = restart(stack, component)
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(2) from exc
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"{component} restarted (pid {comp.pid}), ready in {time.monotonic() - t0:.1f}s")


def _mount_subcommands() -> None:
    """`sightline train|evaluate|model-card`, `drift ...`, `monitor ...` and `model ...` from their own
    modules."""
    from sightline.drift_cli import drift_app
    from sightline.ml.cli import ml_app
    from sightline.model_cli import model_app
    from sightline.monitor_cli import monitor_app

    app.add_typer(ml_app)
    app.add_typer(drift_app, name="drift")
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(model_app, name="model")


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
