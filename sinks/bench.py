"""``geostream bench sink``: rows/s of the sink into ``positions`` beside the limits.

In one run, on a scratch database and scratch topics, with the same clean fixes:

* raw COPY: the rows, already built, binary-COPYed straight into the ``positions`` hypertable in
  batches of the sink's size, one transaction each (the database's limit for this table and
  its indexes);
* naive INSERT: one ``INSERT`` statement per row, committed per batch (what people write first);
* sink writer: the sink's own writer on the already-decoded rows: its fast path (binary COPY
  straight into the hypertable inside a savepoint, plus the latest-positions upsert), its
  staging path (COPY into a temporary table + ``INSERT ... ON CONFLICT DO NOTHING``) that
  replays take, and a replay of rows already stored;
* the sink: ``geostream sink`` end to end, from the first fetched record until every row is
  committed with its offsets (consume, decode, validate, write, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper

from config.settings import Settings, get_settings
from geostream.bench import BenchResult
from geostream.db import database_url
from geostream.garbage import tune_gc
from geostream.kafka import admin_client, create_topics, topic_name, topic_specs
from schemas.records import EnrichedFix
from schemas.wire import encode, record_key
from sinks.migrate import migrate
from sinks.rows import POSITIONS, Row
from sinks.sink import Sink
from sinks.writer import write_batch


def sample_fixes(count: int, couriers: int = 1000) -> list[EnrichedFix]:
    """``count`` clean fixes over ``couriers`` couriers, one per courier per second."""
    start = datetime.now(UTC) - timedelta(hours=2)
    fixes = []
    for i in range(count):
        ts = start + timedelta(seconds=i // couriers)
        fixes.append(
            EnrichedFix(
                fix_id=uuid.uuid4().hex,
                ts=ts,
                lat=43.2 + (i % 997) * 1e-4,
                lon=76.9 + (i % 991) * 1e-4,
                accuracy_m=7.0,
                speed_mps=4.2,
                heading_deg=90.0,
                org_id="bench",
                courier_id=f"courier-{i % couriers}",
                device_id=f"device-{i % couriers}",
                received_at=ts + timedelta(milliseconds=300),
                distance_m=4.2,
                odometer_m=float(i // couriers) * 4.2,
                zone_ids=("zone-1",),
                trip_id=f"trip-{i % couriers}",
                expires_at=ts + timedelta(days=90),
            )
        )
    return fixes


def chunks(rows: list[Any], size: int) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def reset(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE positions, latest_positions")


async def raw_copy(url: str, rows: list[Row], batch: int) -> float:
    copy_sql = sql.SQL("COPY positions ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.SQL(", ").join(map(sql.Identifier, POSITIONS.columns))
    )
    async with await psycopg.AsyncConnection.connect(url) as conn:
        conn.adapters.register_dumper(bytes, BytesBinaryDumper)  # the C dumper, as the sink
        began = time.perf_counter()
        for part in chunks(rows, batch):
            async with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
                copy.set_types(list(POSITIONS.copy_types))
                for row in part:
                    await copy.write_row(row)
        return len(rows) / (time.perf_counter() - began)


async def naive_insert(url: str, fixes: list[EnrichedFix], batch: int) -> float:
    """One INSERT per fix from its fields, committed per batch: the hand-written way."""
    statement = (
        "INSERT INTO positions (ts, org_id, courier_id, device_id, fix_id, geom, accuracy_m,"
        " speed_mps, heading_deg, altitude_m, zone_ids, trip_id, stop_id, received_at,"
        " distance_m, odometer_m, derived_speed_mps, derived_heading_deg, is_late,"
        " retention_class, expires_at) VALUES (%s, %s, %s, %s, %s,"
        " ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
    )
    async with await psycopg.AsyncConnection.connect(url) as conn:
        began = time.perf_counter()
        for part in chunks(fixes, batch):
            async with conn.transaction():
                for f in part:
                    await conn.execute(
                        statement,
                        (
                            f.ts, f.org_id, f.courier_id, f.device_id, f.fix_id, f.lon, f.lat,
                            f.accuracy_m, f.speed_mps, f.heading_deg, f.altitude_m,
                            list(f.zone_ids), f.trip_id, f.stop_id, f.received_at,
                            f.distance_m, f.odometer_m, f.derived_speed_mps,
                            f.derived_heading_deg, f.is_late, f.retention_class, f.expires_at,
                        ),
                    )  # fmt: skip
        return len(fixes) / (time.perf_counter() - began)


async def writer_path(url: str, rows: list[Row], batch: int, direct: bool = True) -> float:
    """Rows/s of the sink's writer alone, on already-decoded rows, one transaction per batch."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        began = time.perf_counter()
        for part in chunks(rows, batch):
            await write_batch(conn, {POSITIONS: part}, direct_positions=direct)
        return len(rows) / (time.perf_counter() - began)


def decode_rate(values: list[bytes]) -> float:
    """Records/s of the sink's per-record CPU work alone: validate the JSON and map the row."""
    from sinks.decode import row_decoder

    decode_row = row_decoder(POSITIONS)
    began = time.perf_counter()
    for value in values:
        decode_row(value)
    return len(values) / (time.perf_counter() - began)


async def sink_end_to_end(settings: Settings, fixes: list[EnrichedFix]) -> tuple[float, float]:
    """Produce the fixes, then time the sink from its first fetched record to the last commit.

    Returns (rows/s, records produced/s of the setup, for reference).
    """
    from geostream.bench_kafka import raw_produce

    topic = topic_name(settings, "fixes.clean")
    records = [(record_key(f.org_id, f.courier_id), encode(f)) for f in fixes]
    produced = await raw_produce(settings, topic, records)
    tune_gc()  # as ``geostream sink`` does at start
    sink = Sink(settings)
    task = asyncio.create_task(sink.run())
    rows = sink.metrics.rows_written.labels("positions")
    consumed = sink.metrics.records.labels("fixes.clean")
    try:
        while consumed._value.get() == 0:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        began = time.perf_counter()
        while rows._value.get() < len(fixes):
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - began
    finally:
        sink.stop()
        await asyncio.wait_for(task, 60)
    return len(fixes) / elapsed, produced


async def measure(count: int, naive_count: int) -> BenchResult:
    base = get_settings()
    owner_url = database_url(base)
    name = f"bench_sink_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = psycopg.conninfo.conninfo_to_dict(owner_url)
    params["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(
        update={
            "database_url": url,
            "topic_prefix": prefix,
            "sink_group_id": f"bench-sink-{uuid.uuid4().hex[:8]}",
            "sink_metrics_port": 0,
            "sink_retention_interval_s": 0,
            "sink_aggregates_interval_s": 0,
        }
    )
    batch = settings.sink_batch_max_records
    try:
        migrate(url)
        await create_topics(settings)
        fixes = sample_fixes(count)
        rows = [POSITIONS.to_row(f) for f in fixes]
        copy_rate = await raw_copy(url, rows, batch)
        await reset(url)
        naive_rate = await naive_insert(url, fixes[:naive_count], batch)
        await reset(url)
        writer_rate = await writer_path(url, rows, batch)
        replay_rate = await writer_path(url, rows, batch, direct=False)  # all duplicates now
        await reset(url)
        staging_rate = await writer_path(url, rows, batch, direct=False)
        await reset(url)
        sink_rate, produce_rate = await sink_end_to_end(settings, fixes)
        decode = decode_rate([encode(f) for f in fixes[:50_000]])
    finally:
        admin = admin_client(settings)
        await admin.start()
        try:
            await admin.delete_topics([prefix + t for t in topic_specs(settings)])
        finally:
            await admin.close()
        async with await psycopg.AsyncConnection.connect(owner_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    result = BenchResult("sink", "Sink into TimescaleDB positions")
    result.add("rows", count, "")
    result.add("batch size", batch, "rows")
    result.add("raw binary COPY into positions (limit)", copy_rate, "rows/s")
    result.add(f"naive per-row INSERT ({naive_count:,} rows)", naive_rate, "rows/s")
    result.add("sink writer: direct COPY in a savepoint + latest upsert", writer_rate, "rows/s")
    result.add("sink writer: staging COPY + ON CONFLICT DO NOTHING", staging_rate, "rows/s")
    result.add("sink writer: replaying rows already stored (no-op)", replay_rate, "rows/s")
    result.add("sink end to end (Kafka -> decode -> DB -> commit)", sink_rate, "rows/s")
    result.add("sink decode + validate + map alone (one core)", decode, "records/s")
    result.add("sink / raw COPY", 100 * sink_rate / copy_rate, "%")
    result.add("sink writer / raw COPY", 100 * writer_rate / copy_rate, "%")
    result.add("sink / naive INSERT", sink_rate / naive_rate, "x")
    result.notes.append(
        f"1,000 couriers, one org, fresh scratch database and topics; Kafka produce for the "
        f"setup ran at {produce_rate:,.0f} records/s"
    )
    result.notes.append(
        "PostgreSQL, Kafka and the sink share the machine's cores; the end-to-end figure "
        "includes JSON decoding and schema validation of every record"
    )
    result.notes.append(
        "the sink, then the decode-alone figure, run in the benchmark's process with the "
        "garbage collector set up as `geostream sink` sets up its own (tune_gc: objects "
        "existing at start frozen, collections every 100k allocations)"
    )
    return result


def register(benches: Any) -> None:
    parser = benches.add_parser("sink", help="sink rows/s vs raw COPY and naive INSERT")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.set_defaults(bench_function=run)


def run(args: argparse.Namespace) -> BenchResult:
    return asyncio.run(measure(args.rows, args.naive_rows))
