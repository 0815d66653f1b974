"""Prometheus metrics of the DICOM receiver (counts and sizes only, never identifiers)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ASSOCIATIONS = Counter(
    "sightline_receiver_associations_total",
    "DICOM associations by outcome (accepted, rejected, aborted).",
    ["outcome"],
)
INSTANCES = Counter(
    "sightline_receiver_instances_total",
    "C-STORE requests by outcome (stored or the refusal's DIMSE status, hex).",
    ["outcome"],
)
STUDIES = Counter(
    "sightline_receiver_studies_total",
    "Assembled studies by delivery outcome (delivered, failed).",
    ["outcome"],
)
PENDING_BYTES = Gauge(
    "sightline_receiver_pending_bytes",
    "Identified bytes held in memory waiting for their study to complete.",
)
