"""Scheduled maintenance: retention and the courier_daily refresh, as the database's owner.

``drop_chunks`` may only be run by the tables' owner, so this is the one part of the sink's
work that needs the owner's login. The sink runs it in-process by default
(``sink_maintenance``); where the sink must log in as its own role only (compose), it is off
there and ``geostream maintain`` runs it as a process of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import psycopg

from config.retention import RetentionPolicy
from config.settings import Settings
from geostream.db import database_url
from sinks.metrics import SinkMetrics

log = logging.getLogger("geostream.sink.maintenance")


class Maintenance:
    """Each job on its own interval: ``sink_retention_interval_s``,
    ``sink_aggregates_interval_s`` (0: never)."""

    def __init__(self, settings: Settings, policy: RetentionPolicy, metrics: SinkMetrics) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics

    async def run_forever(self) -> None:
        """Run the jobs when due, until cancelled; a failed run is logged, never fatal."""
        settings = self.settings
        intervals = {
            "retention": settings.sink_retention_interval_s,
            "aggregates": settings.sink_aggregates_interval_s,
        }
        due = {name: time.monotonic() for name, every in intervals.items() if every > 0}
        while due:
            name = min(due, key=due.__getitem__)
            await asyncio.sleep(max(due[name] - time.monotonic(), 0))
            try:
                await self.run(name)
            except (psycopg.Error, OSError) as exc:
                log.warning("%s failed (%s); next attempt in %.0fs", name, exc, intervals[name])
            due[name] = time.monotonic() + intervals[name]

    async def run(self, name: str) -> None:
        """Run one job now: ``retention`` or ``aggregates``."""
        from sinks.aggregates import lookback_start, refresh_daily
        from sinks.retention import run_retention, timescale_edition

        url = database_url(self.settings)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("SELECT secure_chunks()")  # chunks made by anyone but the sink
            if name == "retention":
                report = await run_retention(conn, self.policy)
                for table, count in report.rows_deleted.items():
                    self.metrics.retention_rows.labels(table).inc(count)
                for table, count in report.chunks_dropped.items():
                    self.metrics.retention_chunks.labels(table).inc(count)
                log.info("retention: chunks dropped %s, rows deleted %s",
                         report.chunks_dropped, report.rows_deleted)  # fmt: skip
            else:
                since = lookback_start(
                    datetime.now(UTC).date(), self.settings.sink_aggregates_lookback_days
                )
                rows = await refresh_daily(conn, self.policy, since, await timescale_edition(conn))
                log.info("courier_daily refreshed from %s: %d rows", since, rows)
