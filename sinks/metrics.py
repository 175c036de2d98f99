"""Prometheus metrics of the sink, in a registry of its own (one per sink instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000)


@dataclass
class SinkMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.rows_written = Counter(
            "geostream_sink_rows_written",
            "Rows inserted or updated, per table (replayed duplicates are not counted).",
            ["table"],
            registry=r,
        )
        self.records = Counter(
            "geostream_sink_records", "Kafka records consumed, per topic.", ["topic"], registry=r
        )
        self.batch_size = Histogram(
            "geostream_sink_batch_size", "Records per written batch.", buckets=_SIZE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "geostream_sink_batch_seconds",
            "Time to write one batch, retries included, until its offsets are committed.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "geostream_sink_retries", "DB or Kafka attempts retried after an error.", ["cause"],
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "geostream_sink_dead_letters", "Records sent to the dead-letter topic.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "geostream_sink_consumer_lag",
            "Records on the broker not yet committed by the sink.",
            ["topic", "partition"],
            registry=r,
        )
        self.e2e_seconds = Histogram(
            "geostream_sink_end_to_end_seconds",
            "From the gateway's received_at to the sink's commit (clean fixes, sampled per batch).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retention_rows = Counter(
            "geostream_sink_retention_rows_deleted",
            "Rows deleted by retention because their expires_at passed, per table.",
            ["table"],
            registry=r,
        )
        self.retention_chunks = Counter(
            "geostream_sink_retention_chunks_dropped",
            "Whole expired chunks dropped by retention, per hypertable.",
            ["table"],
            registry=r,
        )

    def serve(self, host: str, port: int) -> None:
        """Expose ``/metrics`` on ``host:port`` (a daemon thread of prometheus_client)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
