"""The worker reads ``fixes.raw`` records that carry a JSON array of fixes (as the gateway
writes each request), against the real broker: same outputs as one fix per record, a bad
element rejected on its own, ``courier.latest`` written once per courier and batch."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from processors_helpers import (
    consume,
    day_route,
    drop_internal_topics,
    expected,
    raw_key,
    shifted,
    start_worker,
    stop_worker,
)

from config.settings import Settings
from geostream.kafka import create_producer, topic_name
from schemas.wire import encode, encode_array

pytestmark = pytest.mark.stack


async def produce_uploads(settings: Settings, uploads: list[list[bytes]], key: bytes) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, "fixes.raw")
        for values in uploads:
            await producer.send(topic, encode_array(values), key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def test_uploads_of_many_fixes_give_the_same_outputs(
    settings: Settings, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    route = shifted(day_route(), start)
    broken = orjson.loads(encode(replace(route[0], fix_id="broken")))
    broken["lat"] = 91.0
    values = [encode(f) for f in route]
    # an element that breaks the schema: only it is rejected, with the schema's reason
    values.insert(9, orjson.dumps(broken))
    uploads = [values[at : at + 7] for at in range(0, len(values), 7)]
    want = expected(settings, route)
    assert want.trips

    proc = start_worker(settings, tmp_path / "state", tmp_path / "worker.log")
    try:
        await produce_uploads(settings, uploads, raw_key(route[0]))
        want_trips = {t.trip_id for t in want.trips}
        trips = await consume(
            settings, "trips", lambda rs: {r["trip_id"] for r in rs} >= want_trips, worker=proc
        )
        clean = await consume(settings, "fixes.clean", lambda rs: len(rs) >= len(want.clean))
        rejected = await consume(settings, "fixes.rejected", lambda rs: len(rs) >= 1)
        latest = await consume(settings, "courier.latest", lambda rs: len(rs) >= 1)
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)

    assert [c["fix_id"] for c in clean] == [c.fix_id for c in want.clean]
    assert [t["trip_id"] for t in trips] == [t.trip_id for t in want.trips]
    assert [(r["reason"], r["courier_id"]) for r in rejected] == [
        ("invalid_less_than_equal", route[0].courier_id)
    ]
    # one courier.latest record per batch that moved the courier, never one per fix
    assert 1 <= len(latest) < len(clean)
    assert (
        latest[-1]["fix_id"]
        == max((c for c in clean if not c["is_late"]), key=lambda c: c["ts"])["fix_id"]
    )
