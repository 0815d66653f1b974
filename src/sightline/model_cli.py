"""``sightline model promote|rollback``: the model life cycle through the gateway's admin API.

The command asks the gateway (``POST /v1/admin/models/{name}/promote|rollback``) rather than
writing the database itself, so the decision is judged by the same gates, recorded in the same
audit chain, and attributed to the same authenticated admin whichever way it is asked.
Exit status: 0 applied, 1 refused by a gate, 2 the request itself failed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

model_app = typer.Typer(help="Promote or roll back a model version (admin role).", no_args_is_help=True)
console = Console()

GatewayOpt = Annotated[
    str | None,
    typer.Option(help="gateway base URL (default: $SIGHTLINE_GATEWAY_URL, else the local stack)"),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        help="admin bearer token (default: $SIGHTLINE_TOKEN, else the local stack's development token)"
    ),
]
DataDirOpt = Annotated[Path | None, typer.Option(help="data directory of the local stack")]


@model_app.callback()
def _group() -> None:
    """Promote or roll back a model version (admin role)."""


def client(base_url: str) -> httpx.Client:
    """The HTTP client the commands use (tests pass the gateway app in process instead)."""
    return httpx.Client(base_url=base_url, timeout=60.0)


def _target(gateway: str | None, token: str | None, data_dir: Path | None) -> tuple[str, str]:
    gateway = gateway or os.environ.get("SIGHTLINE_GATEWAY_URL")
    token = token or os.environ.get("SIGHTLINE_TOKEN")
    if gateway and token:
        return gateway, token
    from sightline.cli import _dev_token, _settings

    settings = _settings(data_dir)
    if token is None:
        try:
            token = _dev_token(settings)
        except FileNotFoundError as exc:
            console.print("[red]no token:[/] pass --token or set SIGHTLINE_TOKEN (no local stack found)")
            raise typer.Exit(2) from exc
    return gateway or f"http://{settings.host}:{settings.gateway_port}", token


def _show(body: dict[str, Any]) -> None:
    table = Table(title=f"{body['action']} {body['model']} v{body['from_version']} -> v{body['to_version']}")
    for col in ("gate", "verdict", "reason"):
        table.add_column(col)
    for gate in body["gates"]:
        table.add_row(gate["gate"], "[green]pass[/]" if gate["passed"] else "[red]FAIL[/]", gate["reason"])
    console.print(table)
    console.print(f"serving report sha256   {body['serving_report_sha256']}")
    console.print(f"candidate report sha256 {body['candidate_report_sha256']}")
    console.print(f"decision sha256 (audit) {body['digest']}  actor {body['actor']}")


def _decide(action: str, name: str, version: int | None, gateway: str, token: str) -> None:
    payload = {"version": version} if version is not None else {}
    with client(gateway) as http:
        try:
            r = http.post(
                f"/v1/admin/models/{name}/{action}",
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            console.print(f"[red]gateway unreachable:[/] {exc}")
            raise typer.Exit(2) from exc
    if r.status_code not in (200, 409):
        detail = (
            r.json().get("detail", r.text) if r.headers.get("content-type", "").endswith("json") else r.text
        )
        console.print(f"[red]{action} refused ({r.status_code}):[/] {detail}")
        raise typer.Exit(2)
    body = r.json()
    _show(body)
    if not body["applied"]:
        console.print(f"[red]{action} refused:[/] a gate failed; {name} still serves v{body['from_version']}")
        raise typer.Exit(1)
    console.print(f"[green]{name} now serves v{body['to_version']}[/]")


@model_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="model name")],
    gateway: GatewayOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Which version of NAME serves, what a rollback returns to, and its recent decisions."""
    url, bearer = _target(gateway, token, data_dir)
    with client(url) as http:
        try:
            r = http.get(f"/v1/admin/models/{name}/versions", headers={"Authorization": f"Bearer {bearer}"})
        except httpx.HTTPError as exc:
            console.print(f"[red]gateway unreachable:[/] {exc}")
            raise typer.Exit(2) from exc
    if r.status_code != 200:
        console.print(f"[red]status refused ({r.status_code}):[/] {r.text[:300]}")
        raise typer.Exit(2)
    body = r.json()
    previous = body["previous_version"]
    console.print(
        f"{name}: serving v{body['serving_version']} (manifest v{body['manifest_version']}); "
        f"rollback to {'v' + str(previous) if previous else 'nothing'}"
    )
    table = Table(title="Recent decisions")
    for col in ("action", "versions", "applied", "failed gates", "actor", "decision sha256"):
        table.add_column(col)
    for d in body["decisions"]:
        failed = ", ".join(g["gate"] for g in d["gates"] if not g["passed"]) or "-"
        table.add_row(
            d["action"],
            f"v{d['from_version']} -> v{d['to_version']}",
            str(d["applied"]),
            failed,
            d["actor"],
            d["digest"][:16],
        )
    console.print(table)


@model_app.command("promote")
def promote(
    name: Annotated[str, typer.Argument(help="model name (directory under model_repository/)")],
    version: Annotated[int, typer.Argument(help="candidate version to serve", min=1)],
    gateway: GatewayOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve VERSION of NAME if its evaluation report and shadow disagreement pass every gate."""
    _decide("promote", name, version, *_target(gateway, token, data_dir))


@model_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int | None, typer.Option(help="the version expected to serve again")] = None,
    gateway: GatewayOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve again the version NAME served before its last promotion (always allowed; audited)."""
    _decide("rollback", name, version, *_target(gateway, token, data_dir))
