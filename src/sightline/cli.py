"""The ``sightline`` command: the local stack (up, down, status) and the model's life cycle."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sightline.stack import Stack, StackSettings

app = typer.Typer(help="Sightline: assistive medical-image diagnostics, served locally or on Kubernetes.")
console = Console()


def _settings(data_dir: Path | None, **overrides: object) -> StackSettings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir:
        values["data_dir"] = data_dir
    return StackSettings(**values)  # type: ignore[arg-type]


def _model_line(settings: StackSettings) -> str:
    path = settings.model_repository / settings.model_name / "manifest.json"
    if not path.exists():
        return f"model {settings.model_name}: no manifest"
    manifest = json.loads(path.read_text())
    tag = " [bold red]PLACEHOLDER (random weights, outputs mean nothing)[/]" if manifest.get("placeholder") else ""
    return f"model {manifest['name']} v{manifest['version']}{tag}"


def _status_table(rows: list[dict[str, object]]) -> Table:
    table = Table(title="Sightline stack")
    for col in ("component", "pid", "state", "listens"):
        table.add_column(col)
    for row in rows:
        state = "[green]ready[/]" if row["ready"] else ("[yellow]not ready[/]" if row["alive"] else "[red]down[/]")
        listens = "  ".join(f"{k} {v}" for k, v in dict(row["listens"]).items())  # type: ignore[call-overload]
        table.add_row(str(row["name"]), str(row["pid"]), state, listens)
    return table


@app.command()
def up(
    data_dir: Path = typer.Option(None, help="data directory (default var/stack or SIGHTLINE_STACK_DATA_DIR)"),
    detach: bool = typer.Option(False, help="return once ready and leave the stack running"),
    with_prometheus: bool = typer.Option(False, help="also run Debian's prometheus scraping the stack"),
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
            stack.start(on_progress)
        except (RuntimeError, KeyboardInterrupt) as exc:
            console.print(f"[red]start-up failed:[/] {exc}")
            raise typer.Exit(1) from exc
    console.print(_status_table(stack.status()))
    console.print(_model_line(settings))
    console.print(f"all components ready in {time.monotonic() - t0:.1f}s; data in {settings.data_dir.resolve()}")
    if detach:
        console.print("running in the background: `sightline status`, `sightline down`")
        return
    console.print("press Ctrl-C to stop")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    console.print("stopping...")
    stack.stop()
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


def _mount_subcommands() -> None:
    """`sightline train|evaluate|model-card` and `sightline drift ...` from their own modules."""
    from sightline.ml.cli import ml_app

    app.add_typer(ml_app)
    try:
        from sightline.drift_cli import drift_app
    except ImportError:  # drift reporting lands separately
        return
    app.add_typer(drift_app, name="drift")


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
