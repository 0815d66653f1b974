from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

# A real (non-exporting) provider so that trace ids exist, as they do in the running service.
if not isinstance(trace.get_tracer_provider(), TracerProvider):
    trace.set_tracer_provider(TracerProvider())
