"""``sightline monitor report``: real-world performance from the gateway's database, as HTML."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from sightline_common.manifest import load_manifest
from sightline_gateway.core.performance import Case
from sightline_gateway.db.engine import make_engine, make_sessions
from sightline_gateway.db.outcomes import load_cases

from sightline.monitor_report import render

monitor_app = typer.Typer(help="Post-market monitoring: real-world performance from confirmed outcomes.")


@monitor_app.callback()
def _group() -> None:
    """Post-market monitoring: real-world performance from confirmed outcomes."""


def _date(value: str) -> datetime:
    try:
        return (
            datetime.fromisoformat(value).replace(tzinfo=UTC)
            if len(value) == 10
            else datetime.fromisoformat(value)
        )
    except ValueError as exc:
        raise typer.BadParameter("use YYYY-MM-DD") from exc


async def _cases(
    database_url: str, schema: str | None, since: datetime, until: datetime, model: str
) -> list[Case]:
    engine = make_engine(database_url, schema)
    try:
        return await load_cases(make_sessions(engine), since, until, model)
    finally:
        await engine.dispose()


def _claim(model_repository: Path, model: str) -> float | None:
    try:
        test = load_manifest(model_repository, model).metrics.get("test") or {}
    except (OSError, ValueError):
        return None
    value = test.get("sensitivity")
    value = value.get("value") if isinstance(value, dict) else value
    return float(value) if isinstance(value, int | float) else None


@monitor_app.command("report")
def report(
    since: Annotated[str, typer.Option(help="first day (YYYY-MM-DD), by result time")],
    until: Annotated[str | None, typer.Option(help="day after the last (default: now)")] = None,
    database_url: Annotated[
        str, typer.Option(envvar="SIGHTLINE_GATEWAY_DATABASE_URL", help="the gateway's SQLAlchemy async URL")
    ] = "sqlite+aiosqlite:///var/gateway.db",
    database_schema: Annotated[str | None, typer.Option(envvar="SIGHTLINE_GATEWAY_DATABASE_SCHEMA")] = None,
    model: Annotated[str, typer.Option(help="model name")] = "derm-cnn",
    model_repository: Annotated[Path, typer.Option(help="for the model card's claim")] = Path(
        "model_repository"
    ),
    window_days: Annotated[int, typer.Option(min=1, help="rolling window width")] = 30,
    step_days: Annotated[int, typer.Option(min=1, help="rolling window step")] = 7,
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("monitor-report.html"),
) -> None:
    """Write the real-world performance report (the clinical governance board's monthly document)."""
    start = _date(since)
    end = _date(until) if until else datetime.now(UTC)
    if end <= start:
        raise typer.BadParameter("--until must be after --since")
    cases = asyncio.run(_cases(database_url, database_schema, start, end, model))
    if not cases:
        typer.echo(f"no {model} results between {start:%Y-%m-%d} and {end:%Y-%m-%d}", err=True)
        raise typer.Exit(1)
    page = render(
        cases,
        since=start,
        until=end,
        width=timedelta(days=window_days),
        step=timedelta(days=step_days),
        claim=_claim(model_repository, model),
        title=f"Sightline real-world performance: {model}",
    )
    out.write_text(page)
    confirmed = sum(c.truth is not None for c in cases)
    typer.echo(f"{len(cases)} results, {confirmed} with a confirmed outcome: wrote {out}")
