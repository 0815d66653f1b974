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
    "Delivery attempts of assembled studies by outcome: delivered, refused (a final 4xx; removed "
    "from the spool), retrying (kept in the spool), expired (quarantined past the spool's max age).",
    ["outcome"],
)
PENDING_BYTES = Gauge(
    "sightline_receiver_pending_bytes",
    "Identified bytes held in memory waiting for their study to complete.",
)
SPOOL_RECOVERED = Counter(
    "sightline_receiver_spool_recovered_studies_total",
    "Studies read back from the spool at start, to be delivered.",
)
SPOOL_QUARANTINED = Counter(
    "sightline_receiver_spool_quarantined_files_total",
    "Spooled instances moved to quarantine, by reason (unreadable, expired).",
    ["reason"],
)
SPOOL_WRITE_FAILURES = Counter(
    "sightline_receiver_spool_write_failures_total",
    "Instances refused with 0xA700 because the spool could not store them durably.",
)
SPOOL_STUDIES = Gauge(
    "sightline_receiver_spool_studies",
    "Studies in the spool: acknowledged to their senders, not yet delivered or refused.",
)
SPOOL_BYTES = Gauge(
    "sightline_receiver_spool_bytes",
    "Bytes on disk in the spool (sealed instances), quarantine excluded.",
)
