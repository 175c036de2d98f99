"""The one settings object of geostream.

Values come, highest priority first, from ``GEOSTREAM_*`` environment variables, then from the
optional TOML file named by ``GEOSTREAM_CONFIG_FILE``, then from the defaults below. Every part
of the pipeline reads :func:`get_settings`; nothing else reads the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_DIR = CONFIG_DIR.parent


class Settings(BaseSettings):
    """Every tunable of geostream, documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="GEOSTREAM_", extra="forbid", frozen=True)

    # Local stack ---------------------------------------------------------------------------
    stack_dir: Path = Field(
        default=PROJECT_DIR / ".stack",
        description="Where the local stack keeps its data, logs, jars and PIDs (git-ignored).",
    )
    kafka_version: str = Field(
        default="3.9.2", description="Apache Kafka version of the local broker (Maven Central)."
    )
    kafka_heap: str = Field(default="1g", description="Maximum Java heap of the local broker.")
    postgres_version: int | None = Field(
        default=None,
        description="PostgreSQL major version of the local stack (Debian 12: 15, 13: 17).",
    )
    postgres_port: int = Field(default=55432, description="Port of the local PostgreSQL cluster.")

    # Services ------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    database_url: str = Field(
        default="",
        description="PostgreSQL URL of the pipeline's owner role; empty means the local stack's.",
    )
    db_pool_min_size: int = Field(default=1, ge=0, description="Smallest DB pool size.")
    db_pool_max_size: int = Field(default=8, ge=1, description="Largest DB pool size.")

    # Data files ------------------------------------------------------------------------------
    topics_file: Path = Field(
        default=CONFIG_DIR / "topics.yaml", description="Kafka topics: partitions and retention."
    )
    retention_file: Path = Field(
        default=CONFIG_DIR / "retention.yaml", description="Retention classes and periods."
    )
    geofences_file: Path = Field(
        default=CONFIG_DIR / "geofences.geojson", description="Geofences (GeoJSON features)."
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix for every topic name; lets several pipelines share a broker.",
    )

    # Ingest (device gateway) -----------------------------------------------------------------
    ingest_host: str = Field(default="127.0.0.1", description="Address the device gateway binds.")
    ingest_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of the device gateway."
    )
    ingest_url: str = Field(
        default="",
        description="Gateway URL for simulate, replay and bench; empty: host and port above.",
    )
    ingest_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body on the wire (413 above)."
    )
    ingest_max_decompressed_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest gzip-decompressed body (413 above; stops zip bombs).",
    )
    ingest_max_batch_fixes: int = Field(
        default=1000, ge=1, description="Most fixes in one request (413 above)."
    )
    ingest_future_tolerance_s: float = Field(
        default=300.0, ge=0, description="How far ahead of the gateway clock a fix ts may be."
    )
    ingest_max_age_s: float = Field(
        default=48 * 3600.0,
        gt=0,
        description="Oldest fix ts accepted by live ingest (offline batches included).",
    )
    ingest_rate_per_s: float = Field(
        default=5.0, gt=0, description="Requests per second a device may sustain (token bucket)."
    )
    ingest_rate_burst: float = Field(
        default=20.0, ge=1, description="Requests a device may send at once (token bucket size)."
    )
    auth_failures_per_s: float = Field(
        default=1.0,
        gt=0,
        description="Unknown or revoked tokens one client address may present per second (gateway "
        "and API) once its burst is spent; more get 429 before any database lookup.",
    )
    auth_failures_burst: float = Field(
        default=20.0, ge=1, description="Unknown tokens a client address may present at once."
    )
    ingest_token_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a resolved device token is cached; revocation bites within it.",
    )
    ingest_token_stale_s: float = Field(
        default=900.0,
        ge=0,
        description="While PostgreSQL cannot be asked, a device token resolved at most this "
        "long past its cache TTL is still honoured, so phones keep posting through a database "
        "outage (Kafka buffers); unknown tokens get 503 token_store_unavailable.",
    )
    ingest_produce_timeout_s: float = Field(
        default=10.0, gt=0, description="Wait for Kafka acks this long before answering 503."
    )
    ingest_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After seconds sent with 503 when Kafka is unavailable."
    )
    ingest_max_pending_fixes: int = Field(
        default=20_000,
        ge=1,
        description="Fixes one gateway process may have waiting for Kafka's ack; a request "
        "beyond that gets 503 kafka_backlog with Retry-After at once (about 4 s of 5,000 "
        "fixes/s; acks normally take milliseconds).",
    )

    # Processors (worker, cleaning, segmentation) ---------------------------------------------
    stop_max_diameter_m: float = Field(
        default=80.0,
        gt=0,
        description="A stop stays within this diameter (MovingPandas max_diameter): wide enough "
        "for urban GPS jitter (10-30 m) plus a courier walking from kerb to door, narrow enough "
        "that two neighbouring delivery addresses stay apart.",
    )
    stop_min_duration_s: float = Field(
        default=120.0,
        gt=0,
        description="...for at least this long (MovingPandas min_duration): longer than a red "
        "light or a queue at a junction (mostly under 90 s), shorter than a hand-over.",
    )
    trip_max_gap_s: float = Field(
        default=600.0,
        gt=0,
        description="No fix for this long closes the open trip (in the data or by the timer); "
        "apps send every 5-30 s while moving, so 10 min means the phone is off or offline.",
    )
    reorder_window_s: float = Field(
        default=10.0,
        ge=0,
        description="A fix is held until one this much newer (in event time) has come, so "
        "that ones arriving out of order are put back in order before they reach the live "
        "state; older ones are late. reorder_hold_s bounds the wait in processing time.",
    )
    reorder_hold_s: float = Field(
        default=0.0,
        ge=0,
        description="The most a fix is held for reordering after the gateway received it. "
        "At 0 each upload's fixes are put in order and released with the upload, so the live "
        "position and the history never wait for the next upload; a fix of an earlier upload "
        "that comes after a newer one is then late (kept for history, not segmented).",
    )
    clean_max_future_s: float = Field(
        default=120.0, ge=0, description="Refuse fixes whose ts is this far after received_at."
    )
    clean_max_past_s: float = Field(
        default=172_800.0,
        gt=0,
        description="Refuse fixes whose ts is this far before received_at (apps queue offline "
        "fixes for a shift or two).",
    )
    clean_max_accuracy_m: float = Field(
        default=100.0, gt=0, description="Refuse fixes with a worse (larger) accuracy radius."
    )
    clean_max_speed_mps: float = Field(
        default=60.0,
        gt=0,
        description="Implausible jump: derived speed from the last accepted fix above this "
        "(216 km/h; no courier vehicle is faster).",
    )
    clean_jump_recovery_fixes: int = Field(
        default=2,
        ge=1,
        description="After this many consecutive rejected jumps that agree with each other, "
        "the courier really is there: accept and re-anchor.",
    )
    clean_min_period_s: float = Field(
        default=1.0, ge=0, description="Refuse fixes closer in time than this to the last one."
    )
    clean_jitter_radius_m: float = Field(
        default=10.0,
        ge=0,
        description="Movement under this radius from the last moving anchor counts as zero "
        "(parked jitter must not add distance).",
    )
    clean_dedupe_memory: int = Field(
        default=16, ge=1, description="Recent fix ids per courier remembered for dedupe."
    )
    clean_org_overrides: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='Per-org cleaning overrides, e.g. {"acme": {"max_accuracy_m": 50}} (JSON).',
    )
    trip_simplify_tolerance_m: float = Field(
        default=10.0, ge=0, description="Douglas-Peucker tolerance of trip paths."
    )
    trip_path_max_points: int = Field(
        default=32, ge=4, description="Bound on the path points kept in state per open trip."
    )
    stop_window_max_points: int = Field(
        default=16, ge=4, description="Bound on the stop-detection window kept in state."
    )
    zone_min_dwell_s: float = Field(
        default=30.0, ge=0, description="Inside (or out of) a zone this long before the event."
    )
    zone_hysteresis_m: float = Field(
        default=20.0, ge=0, description="Exit only once this far outside the zone's edge."
    )
    worker_store: str = Field(
        default="rocksdb",
        pattern="^(rocksdb|memory)$",
        description="Table store of the worker: rocksdb (rocksdict) or memory.",
    )
    worker_data_dir: Path = Field(
        default=PROJECT_DIR / ".worker", description="Where the worker keeps its table stores."
    )
    worker_idle_interval_s: float = Field(
        default=15.0, gt=0, description="How often the worker's timer closes idle trips."
    )
    worker_state_cache: int = Field(
        default=20_000,
        ge=1,
        description="Courier states the worker keeps decoded in memory (about 5.7 KB each); "
        "the table holds every courier.",
    )
    worker_guarantee: str = Field(
        default="exactly_once",
        pattern="^(exactly_once|at_least_once)$",
        description="faust processing guarantee: exactly_once commits outputs, state changelog "
        "and offsets in one Kafka transaction, so a killed worker never re-emits or loses.",
    )
    worker_commit_interval_s: float = Field(
        default=0.3,
        gt=0,
        description="How often the worker commits its transactions; readers of its topics "
        "(the sink, read_committed) see outputs only then, so this is part of every fix's "
        "way into the database (faust's default is 2.8 s).",
    )
    worker_session_timeout_s: float = Field(
        default=10.0,
        ge=6,
        description="A worker that stops heartbeating (killed, or its machine gone) loses its "
        "partitions after this long; a restarted worker waits as long for the group to let go "
        "of its old self (faust's default is 60 s; the broker's minimum 6 s).",
    )
    worker_partitions: int = Field(
        default=6, ge=1, description="Partitions of fixes.raw (and the table's changelog)."
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Address the worker's Prometheus endpoint listens on."
    )
    worker_metrics_port: int = Field(
        default=9101, description="Prometheus port of the worker (0: off)."
    )

    # Sink and retention ----------------------------------------------------------------------
    sink_group_id: str = Field(
        default="geostream-sink", description="Kafka consumer group of the sink (all 4 topics)."
    )
    sink_batch_max_records: int = Field(
        default=20_000, ge=1, description="The sink writes a batch once it holds this many."
    )
    sink_batch_max_wait_ms: int = Field(
        default=200, ge=1, description="... or once its first record has waited this long."
    )
    sink_retry_initial_s: float = Field(
        default=0.5, gt=0, description="First back-off after a failed (transient) DB write."
    )
    sink_retry_max_s: float = Field(
        default=15.0, gt=0, description="Longest back-off between DB write retries (no limit)."
    )
    sink_metrics_host: str = Field(
        default="127.0.0.1", description="Address of the sink's Prometheus /metrics."
    )
    sink_metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="Port of the sink's /metrics (0: off)."
    )
    sink_maintenance: bool = Field(
        default=True,
        description="The sink runs retention and the courier_daily refresh itself, as the "
        "owner; off where the sink may log in only as its own role (`geostream maintain` then).",
    )
    sink_retention_interval_s: float = Field(
        default=3600.0, ge=0, description="How often the sink runs retention (0: never)."
    )
    sink_aggregates_interval_s: float = Field(
        default=300.0, ge=0, description="How often the sink refreshes courier_daily (0: never)."
    )
    sink_aggregates_lookback_days: int = Field(
        default=2, ge=1, description="Days (back from today) each courier_daily refresh redoes."
    )
    db_api_password: str = Field(
        default="",
        description="Password of the API's DB role geostream_api; empty: the local stack's "
        "(random, in its credentials file). `geostream db roles` sets it.",
    )
    db_gateway_password: str = Field(
        default="",
        description="Password of the gateway's DB role geostream_gateway (token lookups only); "
        "empty: the local stack's.",
    )
    db_sink_password: str = Field(
        default="",
        description="Password of the sink's DB role geostream_sink (writes); empty: the local "
        "stack's.",
    )

    # Dispatcher API --------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="Address the dispatcher API binds.")
    api_port: int = Field(default=8081, ge=0, le=65535, description="Port of the dispatcher API.")
    api_default_range_s: float = Field(
        default=3600.0, gt=0, description="Time range of history queries when from is omitted."
    )
    api_max_range_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Longest from..to range of one history query (422 above); page through "
        "longer periods with several ranges.",
    )
    api_default_limit: int = Field(
        default=500, ge=1, description="Items per page when the request names no limit."
    )
    api_max_limit: int = Field(
        default=10_000,
        ge=1,
        description="Most items per page (422 above); 10,000 lets a dashboard fetch a large "
        "org's latest positions in one request.",
    )
    api_export_max_points: int = Field(
        default=200_000,
        ge=1,
        description="Most fixes (or stops) in one GPX, CSV or GeoJSON track file (413 above).",
    )
    api_statement_timeout_ms: int = Field(
        default=5000, ge=1, description="Longest time one API query may run in PostgreSQL."
    )
    api_zone_fresh_s: float = Field(
        default=900.0,
        gt=0,
        description="A courier counts as inside a zone now if its latest fix there is at most "
        "this old.",
    )
    api_token_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a resolved dispatcher token is cached; revocation takes effect "
        "within it.",
    )
    api_sse_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Comment line sent on idle /v1/live streams this often."
    )
    api_live_streams_per_token: int = Field(
        default=4,
        ge=0,
        description="Open /v1/live streams one dispatcher token may hold (a console in a few "
        "tabs); one more gets 429. 0: no limit.",
    )
    api_sse_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Updates buffered per /v1/live client; a client that falls this far behind "
        "is told so and disconnected (it reconnects and reloads /v1/couriers/latest). An org "
        "of 10,000 couriers sends 1,000 updates/s: this is 10 s of them, about 3 MB.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("GEOSTREAM_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


@lru_cache(maxsize=1)
def is_secret(name: str) -> bool:
    """Whether a setting holds a secret that no command or log may show."""
    return name.endswith("_password")


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
