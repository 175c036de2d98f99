"""Pure parts of the dispatcher API, without I/O: ranges, cursors, the token cache, and the
live feed's filtering and framing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.records import CourierEvent, EnrichedFix
from schemas.wire import WireError, encode
from sinks.api.auth import new_dispatcher_token
from sinks.api.live import LiveHub, TooManyStreams, org_of_key, stream, to_frame
from sinks.api.params import ParamError, decode_cursor, encode_cursor, resolve_range

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_range_defaults_to_the_last_default_span_before_now() -> None:
    span = resolve_range(None, None, now=NOW, default_s=3600, max_s=86400)
    assert (span.start, span.end) == (NOW - timedelta(hours=1), NOW)
    span = resolve_range(None, NOW - timedelta(days=1), now=NOW, default_s=60, max_s=86400)
    assert span.start == NOW - timedelta(days=1, minutes=1)


@pytest.mark.parametrize(
    ("start", "end", "kind"),
    [
        (NOW, NOW, "range_empty"),
        (NOW, NOW - timedelta(seconds=1), "range_empty"),
        (NOW - timedelta(days=1, seconds=1), NOW, "range_too_long"),
    ],
)
def test_bad_ranges_are_refused_with_a_reason(start, end, kind) -> None:
    with pytest.raises(ParamError) as caught:
        resolve_range(start, end, now=NOW, default_s=3600, max_s=86400)
    assert caught.value.kind == kind
    assert caught.value.detail()["loc"] == ["query", "from"]


keys = st.text(alphabet="abcXYZ019._:@-/é", min_size=1, max_size=40)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(ts=times, ident=keys)
def test_cursor_round_trips_its_key(ts: datetime, ident: str) -> None:
    cursor = encode_cursor("track", [ts.isoformat(), ident])
    assert decode_cursor("track", cursor, ("ts", "str")) == (ts, ident)


@given(ident=keys)
def test_a_cursor_is_refused_by_another_listing(ident: str) -> None:
    cursor = encode_cursor("latest", [ident])
    with pytest.raises(ParamError, match="not a cursor of this listing"):
        decode_cursor("zone", cursor, ("str",))


@given(junk=st.text(max_size=60))
def test_junk_cursors_are_param_errors_never_crashes(junk: str) -> None:
    with pytest.raises(ParamError) as caught:
        decode_cursor("track", junk, ("ts", "str"))
    assert caught.value.kind == "cursor_invalid"


def test_naive_timestamps_in_a_cursor_are_refused() -> None:
    cursor = encode_cursor("track", ["2026-11-24T12:00:00", "f1"])
    with pytest.raises(ParamError):
        decode_cursor("track", cursor, ("ts", "str"))


def test_dispatcher_tokens_are_random_and_marked() -> None:
    tokens = {new_dispatcher_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(t.startswith("gsa_") and len(t) >= 40 for t in tokens)


def test_org_of_key() -> None:
    assert org_of_key(b"org-a/c1") == "org-a"
    assert org_of_key(b"org-a/c/1") == "org-a"
    assert org_of_key(b"nocourier") is None
    assert org_of_key(b"/c1") is None
    assert org_of_key(None) is None


def fix(org: str, courier: str) -> EnrichedFix:
    return EnrichedFix(
        fix_id="f1", ts=NOW, lat=43.25, lon=76.95, org_id=org, courier_id=courier,
        device_id="secret-device", received_at=NOW, distance_m=0.0, odometer_m=0.0,
        battery_pct=55.0, expires_at=NOW + timedelta(days=90),
    )  # fmt: skip


def parse(frame: bytes) -> tuple[str, dict[str, object]]:
    lines = frame.decode().split("\n")
    event = next(line[7:] for line in lines if line.startswith("event: "))
    data = orjson.loads(next(line[6:] for line in lines if line.startswith("data: ")))
    assert frame.endswith(b"\n\n")
    return event, data


def test_position_frames_carry_the_record_org_and_only_dispatch_fields() -> None:
    org, frame = to_frame("courier.latest", encode(fix("org-a", "c1")))
    assert org == "org-a"
    event, data = parse(frame)
    assert event == "position"
    assert data["courier_id"] == "c1"
    assert data["lat"] == 43.25
    assert "device_id" not in data
    assert "battery_pct" not in data
    assert "org_id" not in data


def test_event_frames() -> None:
    record = CourierEvent(
        org_id="org-b", courier_id="c9", event_id="e1", kind="stop_started", ts=NOW,
        subject_id="s1", lat=1.0, lon=2.0, expires_at=NOW,
    )  # fmt: skip
    org, frame = to_frame("courier.events", encode(record))
    assert org == "org-b"
    assert parse(frame) == (
        "event",
        {
            "event_id": "e1",
            "courier_id": "c9",
            "kind": "stop_started",
            "ts": "2026-11-24T12:00:00+00:00",
            "subject_id": "s1",
            "lat": 1.0,
            "lon": 2.0,
        },
    )


def test_unreadable_records_raise_wire_errors() -> None:
    with pytest.raises(WireError):
        to_frame("courier.latest", b"{not json")
    with pytest.raises(WireError):
        to_frame("courier.events", orjson.dumps({"org_id": "a"}))


async def test_hub_delivers_by_org_and_drops_a_client_that_falls_behind() -> None:
    hub = LiveHub(queue_size=2)
    a, b = hub.subscribe("org-a"), hub.subscribe("org-b")
    assert hub.watched("org-a")
    assert not hub.watched("org-c")
    assert hub.publish("org-a", b"one") == 1
    assert hub.publish("org-c", b"nobody") == 0
    assert b.queue.empty()
    hub.publish("org-a", b"two")
    hub.publish("org-a", b"three")  # the queue holds 2: a is now behind
    assert a.overflowed

    frames = stream(hub, a, heartbeat_s=60)
    assert (await anext(frames)).startswith(b"event: ready")
    assert (await anext(frames)).startswith(b"event: overflow")
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
    assert not hub.watched("org-a")  # unsubscribed when the stream ended
    assert hub.watched("org-b")
    hub.unsubscribe(b)
    assert hub.subscribers == {}


async def test_stream_sends_heartbeats_when_idle() -> None:
    hub = LiveHub(queue_size=4)
    subscription = hub.subscribe("org-a")
    frames = stream(hub, subscription, heartbeat_s=0.01)
    await anext(frames)
    assert await anext(frames) == b": keep-alive\n\n"
    hub.publish("org-a", b"event: position\ndata: {}\n\n")
    assert await anext(frames) == b"event: position\ndata: {}\n\n"
    await frames.aclose()
    await asyncio.sleep(0)
    assert not hub.watched("org-a")


def test_hub_holds_at_most_so_many_streams_per_token() -> None:
    """Issue 16, finding 4: there was no limit on streams per token."""
    hub = LiveHub(queue_size=4, max_per_owner=2)
    first, second = hub.subscribe("org-a", "t1"), hub.subscribe("org-a", "t1")
    with pytest.raises(TooManyStreams):
        hub.subscribe("org-a", "t1")
    other = hub.subscribe("org-a", "t2")  # another token of the org has its own count
    hub.unsubscribe(first)
    again = hub.subscribe("org-a", "t1")  # a closed stream frees its place
    for subscription in (second, other, again):
        hub.unsubscribe(subscription)
    assert hub.per_owner == {}
    assert hub.subscribers == {}


async def test_stream_ends_once_its_token_is_no_longer_allowed() -> None:
    """Issue 16, finding 4: the token was checked only when the stream opened."""
    hub = LiveHub(queue_size=4)
    subscription = hub.subscribe("org-a", "t1")
    allowed = [True]
    asked = 0

    async def still_allowed() -> bool:
        nonlocal asked
        asked += 1
        return allowed[0]

    frames = stream(hub, subscription, heartbeat_s=60, still_allowed=still_allowed, recheck_s=0.01)
    await anext(frames)
    hub.publish("org-a", b"event: position\ndata: {}\n\n")
    assert await anext(frames) == b"event: position\ndata: {}\n\n"
    allowed[0] = False
    assert (await anext(frames)).startswith(b"event: revoked")
    with pytest.raises(StopAsyncIteration):
        await anext(frames)
    assert asked >= 1
    assert not hub.watched("org-a")


@pytest.mark.parametrize(
    ("start", "end", "where"),
    [
        (None, datetime(1, 1, 1, 0, 30, tzinfo=UTC), "to"),  # issue 16, finding 7: a 500
        (datetime(1, 1, 1, tzinfo=UTC), None, "from"),
        (None, datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "to"),
    ],
)
def test_times_at_the_ends_of_datetime_are_a_422_not_a_500(
    start: datetime | None, end: datetime | None, where: str
) -> None:
    with pytest.raises(ParamError) as raised:
        resolve_range(start, end, now=NOW, default_s=3600, max_s=86400)
    assert raised.value.kind == "time_out_of_range"
    assert raised.value.loc == ("query", where)
