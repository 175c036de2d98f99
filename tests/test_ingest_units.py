"""Pure parts of the gateway: rate limits, token cache and hashing, capped bodies, traces."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geostream.tokens import TokenCache, hash_token
from ingest.body import BadEncoding, BodyTooLarge, ClientGone, gunzip_capped, read_capped
from ingest.ratelimit import RateLimiter, retry_after_header
from ingest.tokens import (
    DeviceError,
    DeviceIdentity,
    check_identifier,
    new_device_token,
)
from ingest.traces import TraceError, parse_csv, parse_gpx, parse_trace, shift_to


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Rate limiter --------------------------------------------------------------------------------


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("d") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("d") == pytest.approx(0.5)
    assert limiter.take("other") == 0.0
    clock.now += 0.5
    assert limiter.take("d") == 0.0
    assert limiter.take("d") > 0
    clock.now += 100
    assert [limiter.take("d") for _ in range(3)] == [0.0, 0.0, 0.0]


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=10),
    burst=st.integers(min_value=1, max_value=10),
    steps=st.lists(st.tuples(st.booleans(), st.floats(0, 2)), max_size=60),
)
def test_wait_is_what_take_would_answer_and_spends_nothing(
    rate: float, burst: int, steps: list[tuple[bool, float]]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=rate, burst=burst, clock=clock)
    twin = RateLimiter(rate_per_s=rate, burst=burst, clock=clock)
    for spend, gap in steps:
        clock.now += gap
        asked = limiter.wait("k")
        assert limiter.wait("k") == asked  # asking twice spends nothing
        if spend:
            assert limiter.take("k") == pytest.approx(asked)
            twin.take("k")
        assert limiter.wait("k") == pytest.approx(twin.wait("k"))


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=200),
)
def test_bucket_never_allows_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=rate, burst=burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.now += gap
        wait = limiter.take("d")
        assert wait >= 0
        allowed += wait == 0
    assert allowed <= burst + rate * sum(gaps) + 1e-6


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"


def test_limiter_forgets_full_buckets_when_crowded() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=2, clock=clock, max_keys=10)
    for i in range(10):
        limiter.take(i)
    clock.now += 10
    limiter.take("new")
    assert limiter.take(0) == 0.0  # a forgotten bucket starts full, as it would have been


# Tokens --------------------------------------------------------------------------------------


def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    tokens = {new_device_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert token.startswith("gsd_")
    assert len(token) >= 40
    assert len(hash_token(token)) == 32
    assert hash_token(token) == hash_token(token)
    assert hash_token(token) != hash_token(token + "x")


def test_token_cache_expires_entries_after_ttl() -> None:
    clock = Clock()
    cache = TokenCache[DeviceIdentity](ttl_s=5.0, clock=clock)
    who = DeviceIdentity("acme", "c1", "d1")
    assert cache.get(b"h") == (False, None)
    cache.put(b"h", who)
    cache.put(b"unknown", None)
    assert cache.get(b"h") == (True, who)
    assert cache.get(b"unknown") == (True, None)
    clock.now += 5.0
    assert cache.get(b"h") == (False, None)  # revocation visible after the TTL


def test_token_cache_is_bounded_and_ttl_zero_disables_it() -> None:
    clock = Clock()
    cache = TokenCache[DeviceIdentity](ttl_s=5.0, max_entries=3, clock=clock)
    for i in range(10):
        cache.put(bytes([i]), None)
    assert [cache.get(bytes([i]))[0] for i in range(10)] == [False] * 7 + [True] * 3
    off = TokenCache[DeviceIdentity](ttl_s=0.0, clock=clock)
    off.put(b"h", None)
    assert off.get(b"h") == (False, None)


def test_a_full_token_cache_makes_room_one_entry_at_a_time() -> None:
    """Issue 16, finding 6: a flood of new tokens used to clear the whole cache."""
    clock = Clock()
    cache = TokenCache[DeviceIdentity](ttl_s=5.0, max_entries=100, clock=clock)
    devices = [DeviceIdentity("acme", f"c{i}", f"d{i}") for i in range(50)]
    for i, who in enumerate(devices):
        cache.put(b"device-%d" % i, who)
    for i in range(50):
        cache.put(b"flood-%d" % i, None)
    cache.put(b"device-0", devices[0])  # refreshed: now the newest
    cache.put(b"flood-50", None)  # makes room by dropping device-1, the oldest refresh
    assert cache.get(b"device-0") == (True, devices[0])
    assert cache.get(b"device-1") == (False, None)
    assert all(cache.get(b"device-%d" % i) == (True, devices[i]) for i in range(2, 50))


def test_token_cache_serves_stale_entries_within_their_bound() -> None:
    clock = Clock()
    cache = TokenCache[DeviceIdentity](ttl_s=5.0, clock=clock, stale_s=60.0)
    who = DeviceIdentity("acme", "c1", "d1")
    cache.put(b"h", who)
    clock.now += 30.0
    assert cache.get(b"h") == (False, None)  # past the TTL: ask the database
    assert cache.stale(b"h") == (True, who)  # ... and if it cannot be asked, this
    clock.now += 35.0
    assert cache.stale(b"h") == (False, None)  # 65 s after: beyond the bound
    assert cache.get(b"h") == (False, None)
    assert cache.stale(b"never") == (False, None)
    no_stale = TokenCache[DeviceIdentity](ttl_s=5.0, clock=clock)
    no_stale.put(b"h", who)
    clock.now += 5.0
    assert no_stale.stale(b"h") == (False, None)


def test_identity_key_scopes_courier_by_org() -> None:
    assert DeviceIdentity("a", "c", "d").key == b"a/c"
    assert check_identifier("org", "acme-1.x") == "acme-1.x"
    for bad in ("a/b", "", "x" * 129, "spa ce"):
        with pytest.raises(DeviceError):
            check_identifier("org", bad)


# Bodies --------------------------------------------------------------------------------------


def receiver(chunks: list[bytes], disconnect: bool = False) -> Any:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


async def test_read_capped_stops_once_over_the_limit() -> None:
    assert await read_capped(receiver([b"ab", b"cd"]), 4) == b"abcd"
    inner = receiver([b"x" * 10] * 100)
    calls = 0

    async def counting() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        message: dict[str, Any] = await inner()
        return message

    with pytest.raises(BodyTooLarge):
        await read_capped(counting, 25)
    assert calls == 3  # three chunks read, the rest never asked for
    with pytest.raises(ClientGone):
        await read_capped(receiver([b"a"], disconnect=True), 10)


def test_gunzip_caps_inflated_size() -> None:
    assert gunzip_capped(gzip.compress(b"hello"), 5) == b"hello"
    with pytest.raises(BodyTooLarge):
        gunzip_capped(gzip.compress(b"0" * 10_000_000), 1_000_000)
    with pytest.raises(BadEncoding):
        gunzip_capped(b"plain", 100)
    with pytest.raises(BadEncoding):
        gunzip_capped(gzip.compress(b"x" * 1000)[:20], 10_000)


# Traces --------------------------------------------------------------------------------------


def test_csv_trace_with_optional_and_unknown_columns() -> None:
    text = (
        "courier_id,ts,lat,lon,accuracy_m,speed_mps,phone_model\n"
        "c2,2026-11-24T10:00:05Z,43.1,76.1,5,,pixel\n"
        "c1,1795600000000,43.2,76.2,,1.5,pixel\n"
    )
    trace = parse_csv(text)
    assert trace.ignored_columns == ("phone_model",)
    assert trace.couriers == ("c1", "c2")
    first, second = trace.points
    assert first.courier_id == "c2"
    assert first.fix["accuracy_m"] == 5.0
    assert "speed_mps" not in first.fix
    assert second.fix["ts"] == 1795600000000
    assert second.fix["speed_mps"] == 1.5
    assert "phone_model" not in second.fix
    assert first.fix["fix_id"] != second.fix["fix_id"]
    assert parse_csv(text).points[0].fix["fix_id"] == first.fix["fix_id"]  # stable on replay


@pytest.mark.parametrize(
    "text",
    [
        "courier,ts,lat,lon\nc,1,2,3\n",
        "courier_id,ts,lat,lon\nc,2026-01-01T00:00:00,2,3\n",
        "courier_id,ts,lat,lon\nc,1,north,3\n",
        "courier_id,ts,lat,lon\n,1,2,3\n",
    ],
)
def test_csv_errors_name_the_problem(text: str) -> None:
    with pytest.raises(TraceError):
        parse_csv(text)


def test_gpx_trace() -> None:
    gpx = """<?xml version="1.0"?>
    <gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">
      <trk><name>courier-9</name><trkseg>
        <trkpt lat="43.1" lon="76.1"><ele>812.5</ele><time>2026-11-24T10:00:00Z</time></trkpt>
        <trkpt lat="43.2" lon="76.2"><time>2026-11-24T10:00:10Z</time></trkpt>
      </trkseg></trk>
    </gpx>"""
    trace = parse_trace(gpx, "/tmp/day.gpx")
    assert trace.couriers == ("courier-9",)
    assert [p.fix["lat"] for p in trace.points] == [43.1, 43.2]
    assert trace.points[0].fix["altitude_m"] == 812.5
    assert trace.points[1].epoch_s - trace.points[0].epoch_s == 10
    unnamed = gpx.replace("<name>courier-9</name>", "")
    assert parse_gpx(unnamed, "day").couriers == ("day",)
    with pytest.raises(TraceError):
        parse_gpx("<gpx/>", "x")


def test_shift_to_moves_the_end_and_keeps_spacing() -> None:
    trace = parse_csv("courier_id,ts,lat,lon\nc,1000,1,1\nc,61000,1,1\n")
    shifted = shift_to(trace, 5000.0)
    assert [p.fix["ts"] for p in shifted.points] == [4_940_000, 5_000_000]
    assert shifted.points[0].fix["fix_id"] == trace.points[0].fix["fix_id"]
