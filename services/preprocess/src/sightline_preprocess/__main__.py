"""Run the preprocess service: ``python -m sightline_preprocess`` (settings from the environment)."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    from sightline_common.logging import configure_logging
    from sightline_common.telemetry import setup_tracing

    from sightline_preprocess.settings import PreprocessSettings

    settings = PreprocessSettings()  # type: ignore[call-arg]
    # KServe parses sys.argv at import; keep its view empty of our options.
    sys.argv = sys.argv[:1]
    from sightline_preprocess.app import PreprocessServer, create_app, create_transformers

    configure_logging("preprocess", json_output=settings.log_json, level=settings.log_level)
    setup_tracing("preprocess", settings.telemetry)
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer

    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    transformers = create_transformers(settings)
    server = PreprocessServer(
        create_app(settings, transformers),
        http_port=settings.port,
        grpc_port=settings.grpc_port,
        enable_docs_url=False,
        enable_latency_logging=False,
    )
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start(transformers)


if __name__ == "__main__":
    main()
