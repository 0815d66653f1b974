"""Run the gateway: ``python -m sightline_gateway`` (settings from the environment)."""

from __future__ import annotations


def main() -> None:
    from sightline_common.logging import configure_logging
    from sightline_common.telemetry import setup_tracing

    from sightline_gateway.app import create_app
    from sightline_gateway.server import server
    from sightline_gateway.settings import GatewaySettings

    settings = GatewaySettings()  # type: ignore[call-arg]
    configure_logging("gateway", json_output=settings.log_json, level=settings.log_level)
    setup_tracing("gateway", settings.telemetry)
    server(create_app(settings), settings).run()


if __name__ == "__main__":
    main()
