"""The faust worker against the real broker: outputs, timer, crash and resume.

Each test runs ``geostream worker`` as a subprocess on its own topic prefix (so its own faust
app id, consumer group, changelog and state directory), produces IngestedFix records to the
test's fixes.raw and reads the outputs back with a read_committed consumer.
"""

from __future__ import annotations

import signal
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from processors_helpers import (
    GAP_S,
    consume,
    day_route,
    drop_internal_topics,
    expected,
    fix,
    produce,
    records_until,
    scrape,
    shifted,
    start_worker,
    stop_worker,
)

from geostream.kafka import admin_client, create_producer, topic_name
from geostream.stack.system import free_port
from processors.app import CHANGELOG_CONFIG, app_id
from processors.erasure import encode_marker, marker_key
from schemas.records import IngestedFix
from sinks.erasure import Erased, publish

pytestmark = pytest.mark.stack


async def topic_config(settings, topic: str) -> dict[str, str]:
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {name: value for name, value, *_ in described[0].resources[0][4]}


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    return tmp_path


async def test_worker_emits_stops_trips_rejections_and_latest(settings, worker_dir):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    route = shifted(day_route(), start)
    bad = [
        replace(route[5], fix_id="null-island", lat=0.0, lon=0.0),
        route[7],  # a retried fix: duplicate_fix_id
    ]
    fixes = route[:8] + bad + route[8:]
    want = expected(settings, fixes)
    assert len(want.trips) == 2
    assert want.stops
    port = free_port()
    proc = start_worker(
        settings, worker_dir / "state", worker_dir / "worker.log", metrics_port=port
    )
    try:
        await produce(settings, fixes)
        want_trip_ids = {t.trip_id for t in want.trips}
        trips = await consume(
            settings, "trips", lambda rs: {r["trip_id"] for r in rs} >= want_trip_ids, worker=proc
        )
        rejected = await consume(settings, "fixes.rejected", lambda rs: len(rs) >= 2)
        clean = await consume(settings, "fixes.clean", lambda rs: len(rs) >= len(route))
        stops = await consume(settings, "stops", lambda rs: len(rs) >= len(want.stops))
        latest = await consume(settings, "courier.latest", lambda rs: len(rs) >= 1)
        events = await consume(settings, "courier.events", lambda rs: len(rs) >= len(want.events))
        metrics = scrape(port)
        changelog = await topic_config(settings, f"{app_id(settings)}-courier-state-changelog")
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    assert [t["trip_id"] for t in trips] == [t.trip_id for t in want.trips]
    assert trips[0]["distance_m"] == pytest.approx(want.trips[0].distance_m)
    assert [r["closed_by"] for r in trips] == ["stop", "stop"]
    assert sorted(r["reason"] for r in rejected) == ["duplicate_fix_id", "null_island"]
    assert [c["fix_id"] for c in clean] == [c.fix_id for c in want.clean]
    assert {(s["stop_id"], s["is_open"]) for s in stops} == {
        (s.stop_id, s.is_open) for s in want.stops
    }
    assert latest[-1]["fix_id"] == route[-1].fix_id or latest[-1]["courier_id"] == "c1"
    assert {e["event_id"] for e in events} == {e.event_id for e in want.events}
    assert all("expires_at" in r and "retention_class" in r for r in [*trips, *stops, *clean])
    assert f"geostream_processor_fixes_in_total {float(len(fixes))}" in metrics
    assert 'geostream_processor_fixes_out_total{reason="null_island",result="rejected"} 1.0' in (
        metrics
    )
    assert 'geostream_processor_trips_total{closed_by="stop"} 2.0' in metrics
    assert "geostream_processor_latency_seconds_count" in metrics
    # compacted, in segments that close within a minute: a restart replays about one state
    # per courier, not every state write since the topic was made
    assert {k: changelog[k] for k in CHANGELOG_CONFIG} == CHANGELOG_CONFIG


async def test_timer_closes_trip_when_no_fix_arrives(settings, worker_dir):
    now = datetime.now(UTC)
    moving = [fix(i * 2.0, 0, i * 20, courier="idle-1") for i in range(10)]
    moving = shifted(moving, now - timedelta(seconds=20), received=now)
    proc = start_worker(settings, worker_dir / "state", worker_dir / "worker.log")
    try:
        await produce(settings, moving)
        trips = await consume(settings, "trips", lambda rs: len(rs) >= 1, GAP_S + 90, proc)
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    assert [t["closed_by"] for t in trips] == ["timer"]
    assert trips[0]["end"].startswith(moving[-1].ts.strftime("%Y-%m-%dT%H:%M:%S"))
    assert trips[0]["fix_count"] == 10


async def test_the_live_position_is_out_before_the_next_upload(settings, worker_dir):
    """One upload of five fixes, shuffled within the window, and no timer: ``courier.latest``
    and fixes.clean get its newest fix without waiting for another upload (issue 15)."""
    now = datetime.now(UTC).replace(microsecond=0)
    upload = [fix(i * 5.0, 0, i * 40, courier="live-1") for i in range(5)]
    upload = shifted(upload, now - timedelta(seconds=25), received=now)
    no_timer = {"GEOSTREAM_WORKER_IDLE_INTERVAL_S": "3600"}
    proc = start_worker(settings, worker_dir / "state", worker_dir / "w.log", extra_env=no_timer)
    try:
        await produce(settings, [upload[i] for i in (1, 0, 3, 2, 4)], per_record=5)
        newest = upload[-1].fix_id
        latest = await consume(
            settings, "courier.latest", lambda rs: newest in {r["fix_id"] for r in rs}, 90, proc
        )
        clean = await consume(settings, "fixes.clean", lambda rs: len(rs) >= len(upload))
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    assert latest[-1]["fix_id"] == newest
    assert [c["fix_id"] for c in clean] == [f.fix_id for f in upload]
    assert not any(c["is_late"] for c in clean)


@pytest.mark.parametrize(
    ("store", "stop"),
    [
        ("rocksdb", signal.SIGKILL),  # its store is dropped and rebuilt from the changelog
        ("memory", signal.SIGKILL),
        # a clean stop keeps the rocksdb store, written without its log: the restart's
        # recovery must bring back what the store may have lost
        ("rocksdb", signal.SIGTERM),
    ],
    ids=["rocksdb-killed", "memory-killed", "rocksdb-stopped"],
)
async def test_stopped_or_killed_worker_resumes_and_emits_nothing_twice(
    settings, worker_dir, store, stop
):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    fixes: list[IngestedFix] = []
    for n in range(12):
        courier_route = [
            replace(f, courier_id=f"k{n}", fix_id=f"k{n}-{f.fix_id}") for f in day_route()
        ]
        fixes += shifted(courier_route, start + timedelta(seconds=n))
    fixes.sort(key=lambda f: f.ts)
    # No idle timer here (its own test is above): whether it fires between the two halves
    # depends on how fast the worker is, and these fixes were received hours ago.
    no_timer = {"GEOSTREAM_WORKER_IDLE_INTERVAL_S": "3600"}
    want = expected(settings, fixes, quiet_until=start)
    half = len(fixes) // 2
    log = worker_dir / "worker.log"
    proc = start_worker(settings, worker_dir / "state", log, store, extra_env=no_timer)
    try:
        await produce(settings, fixes[:half])
        # wait until the worker has committed part of the first half, then stop it
        await consume(settings, "fixes.clean", lambda rs: len(rs) >= half // 3, worker=proc)
        proc.send_signal(stop)
        proc.wait(60)
        await produce(settings, fixes[half:])
        proc = start_worker(settings, worker_dir / "state", log, store, extra_env=no_timer)
        want_trip_ids = {t.trip_id for t in want.trips}
        trips = await consume(
            settings, "trips", lambda rs: {r["trip_id"] for r in rs} >= want_trip_ids, 180, proc
        )
        clean = await consume(
            settings, "fixes.clean", lambda rs: len({r["fix_id"] for r in rs}) >= len(want.clean)
        )
        stops = await consume(
            settings,
            "stops",
            lambda rs: len({(r["stop_id"], r["is_open"]) for r in rs}) >= len(want.stops),
        )
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    # Resumed with its state: every expected record is there, and anything the restart
    # emitted again is the very same record under the same id, so the sink's upsert absorbs it.
    assert_same_when_repeated(trips, "trip_id")
    assert {t["trip_id"] for t in trips} == {t.trip_id for t in want.trips}
    assert_same_when_repeated(clean, "fix_id")
    assert {c["fix_id"] for c in clean} == {c.fix_id for c in want.clean}
    assert_same_when_repeated(stops, "stop_id", "is_open")
    assert {(s["stop_id"], s["is_open"]) for s in stops} == {
        (s.stop_id, s.is_open) for s in want.stops
    }
    assert not [r for r in clean if r["is_late"]]  # the restart did not replay into late fixes


def assert_same_when_repeated(records: list[dict], *id_fields: str) -> None:
    seen: dict[tuple, dict] = {}
    for record in records:
        key = tuple(record[f] for f in id_fields)
        assert seen.setdefault(key, record) == record, key


async def test_an_erasure_drops_the_state_and_tombstones_every_output(settings, worker_dir):
    """A courier with an open trip is erased: its state goes (a tombstone on the changelog),
    each output topic gets a tombstone after its records, a fix received before the erasure
    but queued after it is dropped, the open trip is never closed, and a new device's fixes
    start a history that links to nothing from before."""
    now = datetime.now(UTC).replace(microsecond=0)
    key = b"acme/gone"
    moving = [fix(i * 2.0, 0, i * 20, courier="gone") for i in range(10)]
    moving = shifted(moving, now - timedelta(seconds=60), received=now - timedelta(seconds=30))
    late = replace(moving[-1], fix_id="gone-late", ts=moving[-1].ts + timedelta(seconds=2),
                   received_at=now - timedelta(seconds=1))  # fmt: skip
    fresh = [
        replace(f, device_id="new-phone", fix_id=f"gone-new-{i}")
        for i, f in enumerate(shifted(moving, now, received=now + timedelta(seconds=1)))
    ]
    erased = Erased(str(uuid.uuid4()), "acme", "gone", "test", now, {}, ("d1",))
    port = free_port()
    proc = start_worker(
        settings, worker_dir / "state", worker_dir / "worker.log", metrics_port=port
    )
    try:
        await produce(settings, moving)
        await consume(settings, "fixes.clean", lambda rs: len(rs) >= len(moving), 90, proc)
        producer = create_producer(settings)
        await producer.start()
        try:
            await publish(producer, settings, erased)
        finally:
            await producer.stop()
        await produce(settings, [late, *fresh])

        def has_fresh(records: list) -> bool:
            return any(r.value and b"gone-new-9" in r.value for r in records)

        clean = await records_until(settings, topic_name(settings, "fixes.clean"), has_fresh, 60)
        # past the trip gap: the timer would have closed the old trip by now; the new one is
        # closed by the timer too (the fresh fixes stop arriving)
        trips = await consume(settings, "trips", lambda rs: len(rs) >= 1, GAP_S + 60, proc)
        outputs = {
            name: await records_until(
                settings, topic_name(settings, name), lambda rs: any(r.value is None for r in rs)
            )
            for name in ("stops", "trips", "courier.events", "courier.latest")
        }
        changelog = await records_until(
            settings,
            f"{app_id(settings)}-courier-state-changelog",
            lambda rs: any(r.key == marker_key(key) for r in rs),
        )
        metrics = scrape(port)
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)

    values = [r.value for r in clean if r.key == key]
    cut = values.index(None)
    before = [orjson.loads(v)["fix_id"] for v in values[:cut]]
    after = [orjson.loads(v) for v in values[cut + 1 :]]
    assert before == [f.fix_id for f in moving]
    assert [a["fix_id"] for a in after] == [f.fix_id for f in fresh]  # not gone-late
    assert after[0]["distance_m"] == 0.0
    assert after[0]["odometer_m"] == 0.0
    old_trip = orjson.loads(values[cut - 1])["trip_id"]
    assert {a["trip_id"] for a in after}.isdisjoint({old_trip})
    assert [(t["fix_count"], t["closed_by"]) for t in trips] == [(len(fresh), "timer")]
    for name, records in outputs.items():
        assert None in [r.value for r in records if r.key == key], name
    # courier.latest: the old positions, the tombstone, then only the new device's
    latest = [orjson.loads(r.value)["fix_id"] if r.value else None
              for r in outputs["courier.latest"] if r.key == key]  # fmt: skip
    tombstone = latest.index(None)
    assert set(latest[:tombstone]) <= {f.fix_id for f in moving}
    assert set(latest[tombstone + 1 :]) <= {f.fix_id for f in fresh}
    assert latest[-1] == fresh[-1].fix_id
    states = [r.value for r in changelog if r.key == key]
    assert None in states  # the tombstone, then the fresh state
    assert [r.value for r in changelog if r.key == marker_key(key)] == [
        encode_marker(int(now.timestamp() * 1000))
    ]
    assert 'geostream_processor_fixes_out_total{reason="",result="erased"} 1.0' in metrics
    assert "geostream_processor_erasures_total 1.0" in metrics
