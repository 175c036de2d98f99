"""Prometheus metrics of the stream worker, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
SIZE_BUCKETS = (64, 128, 256, 512, 768, 1024, 1536, 2048, 4096, 8192)


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.fixes_in = Counter(
            "geostream_processor_fixes_in", "Records read from fixes.raw.", registry=r
        )
        self.fixes_out = Counter(
            "geostream_processor_fixes_out",
            "Fixes by result (clean, late, rejected, replayed: skipped as already applied before a"
            " crash) and reason code (rejections).",
            ["result", "reason"],
            registry=r,
        )
        # The series counted for every fix, bound once: ``labels()`` costs 4 times ``inc()``.
        self.clean_out = self.fixes_out.labels("clean", "")
        self.late_out = self.fixes_out.labels("late", "")
        self.replayed_out = self.fixes_out.labels("replayed", "")
        self.latency = Histogram(
            "geostream_processor_latency_seconds",
            "From the gateway's received_at until the worker emitted the clean fix.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.state_bytes = Histogram(
            "geostream_processor_state_bytes",
            "Serialised size of a courier's state after each update.",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.couriers = Gauge(
            "geostream_processor_couriers", "Couriers whose state this worker holds.", registry=r
        )
        self.stops = Counter(
            "geostream_processor_stops",
            "Stop records emitted, open or closed.",
            ["state"],
            registry=r,
        )
        self.trips = Counter(
            "geostream_processor_trips",
            "Trips emitted, by what closed them.",
            ["closed_by"],
            registry=r,
        )
        self.open_trips = Gauge(
            "geostream_processor_open_trips",
            "Couriers of this worker with an open trip.",
            registry=r,
        )
        self.timer_closed = Counter(
            "geostream_processor_timer_closed_trips",
            "Trips closed by the idle timer (no further fix).",
            registry=r,
        )
        self.rewinds = Counter(
            "geostream_processor_rewinds",
            "Source partitions sought back because records went missing between fetch and"
            " processing (around rebalances).",
            registry=r,
        )
