"""Prometheus metrics of the gateway, in a registry of its own (one per gateway instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class IngestMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "geostream_ingest_requests",
            "HTTP requests by path and status code.",
            ["path", "status"],
            registry=r,
        )
        self.auth_refused = Counter(
            "geostream_ingest_auth_refused",
            "Requests refused before a token lookup: their address presented too many unknown"
            " tokens.",
            registry=r,
        )
        self.fixes_accepted = Counter(
            "geostream_ingest_fixes_accepted", "Fixes acknowledged by Kafka.", registry=r
        )
        self.fixes_rejected = Counter(
            "geostream_ingest_fixes_rejected",
            "Fixes refused, by reason code.",
            ["reason"],
            registry=r,
        )
        self.unknown_fields = Counter(
            "geostream_ingest_unknown_fields_dropped",
            "Fields outside the schema that were dropped (data minimisation).",
            registry=r,
        )
        self.produce_seconds = Histogram(
            "geostream_ingest_produce_seconds",
            "From handing a request's fixes to the producer until Kafka acknowledged all.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "geostream_ingest_batch_fixes",
            "Fixes per accepted-shape request.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "geostream_ingest_requests_in_flight", "Requests being handled now.", registry=r
        )
