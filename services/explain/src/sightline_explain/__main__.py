"""Run the explanation service: ``python -m sightline_explain`` starts its own Ray and the Serve app.

In a cluster the app runs under a RayService instead (``sightline_explain.serve:app``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading


def main() -> int:
    import ray
    from ray import serve
    from sightline_common.logging import configure_logging

    from sightline_explain.app import build_deployment
    from sightline_explain.settings import ExplainSettings

    settings = ExplainSettings()  # type: ignore[call-arg]
    configure_logging("explain", json_output=settings.log_json, level=settings.log_level)
    log = logging.getLogger("sightline_explain")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # address="local": always a private Ray instance, never one found in the environment.
    ray.init(
        address="local",
        num_cpus=settings.ray_num_cpus,
        object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=str(settings.ray_temp_dir) if settings.ray_temp_dir else None,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        # Tracing is set up inside each replica (see app); the env carries the exporter settings.
        serve.run(build_deployment(settings), name="explain", route_prefix="/", blocking=False)
        log.info("explain serving on %s:%d", settings.host, settings.port)
        stop.wait()
        log.info("explain shutting down")
        serve.shutdown()
        return 0
    except Exception as exc:  # noqa: BLE001 - report why the app did not deploy, then stop Ray
        log.error("explain failed to start: %s", type(exc).__name__)
        return 1
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
