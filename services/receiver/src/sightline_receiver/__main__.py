"""``python -m sightline_receiver``: build settings from the environment, then serve."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError
from sightline_common.logging import configure_logging
from sightline_common.telemetry import setup_tracing

from sightline_receiver.app import SERVICE, create_app
from sightline_receiver.core.sealing import InvalidKey
from sightline_receiver.settings import ReceiverSettings

log = logging.getLogger("sightline_receiver")


def main() -> int:
    """Start the service; exit 2 (without serving) on missing or unsafe settings or spool key."""
    try:
        settings = ReceiverSettings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        configure_logging(SERVICE, json_output=False)
        # The messages are ours or pydantic's; the offending values (e["input"]) are never shown.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        log.error("invalid settings: %s (SIGHTLINE_RECEIVER_ env)", problems)
        return 2
    configure_logging(SERVICE, json_output=settings.log_json, level=settings.log_level)
    setup_tracing(SERVICE, settings.telemetry)
    try:
        app = create_app(settings)
    except InvalidKey as exc:
        log.error("%s (SIGHTLINE_RECEIVER_SPOOL_KEY_FILE)", exc)
        return 2
    log.info(
        "receiver starting on %s:%d (HTTP), DICOM port %d", settings.host, settings.port, settings.dicom_port
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
