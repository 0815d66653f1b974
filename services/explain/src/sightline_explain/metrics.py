"""Metrics specific to the explanation service (the shared ones are in sightline_common.metrics)."""

from __future__ import annotations

from prometheus_client import Histogram

BATCH_SIZE = Histogram(
    "sightline_explain_batch_size",
    "Number of images per batched Grad-CAM computation.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
