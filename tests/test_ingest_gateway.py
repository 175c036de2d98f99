"""The device gateway against the real broker and the real database.

Each test runs a real uvicorn server with the gateway in-process on a free port, with the
test's own topics and database (conftest ``settings``), talks HTTP to it, and reads
``fixes.raw`` back with a plain consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
import uvicorn
from psycopg.conninfo import conninfo_to_dict

from config.retention import RetentionPolicy
from config.settings import Settings, get_settings
from geostream.db import create_pool
from geostream.kafka import create_consumer, create_producer, topic_name
from geostream.stack import Stack
from geostream.stack.system import free_port, pid_alive
from ingest.app import Gateway as GatewayApp
from ingest.server import server_config
from ingest.tokens import TokenStore
from schemas.records import IngestedFix
from schemas.wire import decode
from sinks.erasure import erase_in_database, publish

pytestmark = pytest.mark.stack


@dataclass
class Gateway:
    url: str
    port: int
    settings: Settings
    store: TokenStore
    session: aiohttp.ClientSession
    app: GatewayApp

    async def device(self, org: str, courier: str, device: str | None = None) -> str:
        return await self.store.create(org, courier, device or f"dev-{uuid.uuid4().hex[:8]}")

    async def post(
        self,
        token: str | None,
        body: bytes | dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], Any]:
        all_headers = {"Content-Type": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(
            f"{self.url}/v1/fixes", data=data, headers=all_headers
        ) as response:
            payload = await response.read()
            return response.status, orjson.loads(payload), response.headers

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(f"{self.url}{path}") as response:
            return response.status, await response.read()


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    port = free_port()
    config = server_config(settings, port=port)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "gateway failed to start"
        await asyncio.sleep(0.02)
    pool = create_pool(settings)
    await pool.open()
    try:
        async with aiohttp.ClientSession() as session:
            yield Gateway(
                f"http://127.0.0.1:{port}", port, settings, TokenStore(pool), session, config.app
            )
    finally:
        await pool.close()
        server.should_exit = True
        await task


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    test_settings = settings.model_copy(update={"ingest_token_cache_ttl_s": 0.0})
    async with running_gateway(test_settings) as gw:
        yield gw


def fix(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "fix_id": uuid.uuid4().hex,
        "ts": (now - timedelta(seconds=30)).isoformat(),
        "lat": 43.2389,
        "lon": 76.8897,
    }
    body.update(overrides)
    return body


@dataclass(frozen=True)
class RawFix:
    """One fix of a fixes.raw record (a record holds one fix or a JSON array of them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def unbatch(records: Iterable[Any]) -> list[RawFix]:
    out = []
    for r in records:
        document = orjson.loads(r.value)
        for item in document if isinstance(document, list) else [document]:
            out.append(RawFix(r.topic, r.partition, r.offset, r.key, orjson.dumps(item)))
    return out


async def consume(settings: Settings, expected: int, *, settle_s: float = 1.0) -> list[RawFix]:
    """Every fix of fixes.raw: at least ``expected``, then whatever else arrives soon."""
    consumer = create_consumer(
        settings,
        topic_name(settings, "fixes.raw"),
        group_id=None,
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    records: list[RawFix] = []
    try:
        while len(records) < expected:
            batches = await consumer.getmany(timeout_ms=15_000)
            assert batches, f"only {len(records)} of {expected} fixes came back"
            for batch in batches.values():
                records.extend(unbatch(batch))
        while batches := await consumer.getmany(timeout_ms=int(settle_s * 1000)):
            for batch in batches.values():
                records.extend(unbatch(batch))
    finally:
        await consumer.stop()
    return records


def by_fix_id(records: Iterable[Any]) -> dict[str, Any]:
    return {orjson.loads(r.value)["fix_id"]: r for r in records}


# Good fixes ----------------------------------------------------------------------------------


async def test_good_fixes_land_in_fixes_raw(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-7", "phone-7")
    now_ms = int(time.time() * 1000)
    sent = [
        fix(
            ts=now_ms - 60_000 + i * 1000 if i % 2 else fix()["ts"],
            lat=43.2 + i * 1e-4,
            lon=76.9 - i * 1e-4,
            accuracy_m=5 + i,
            speed_mps=3.5,
            heading_deg=359.9,
            altitude_m=-12.0,
            provider=["gps", "network", "fused"][i % 3],
            battery_pct=i,
            is_mock=i == 3,
        )
        for i in range(40)
    ]
    status, answer, _ = await gateway.post(token, {"fixes": sent})
    assert status == 200, answer
    assert answer == {"accepted": 40, "rejected": [], "warnings": []}

    # The placement a plain keyed send would choose, for the partition check below (this
    # probe record is written to another topic so fixes.raw holds only the gateway's).
    producer = create_producer(gateway.settings)
    await producer.start()
    try:
        assert await producer.partitions_for(
            topic_name(gateway.settings, "fixes.clean")
        ) == await producer.partitions_for(topic_name(gateway.settings, "fixes.raw"))
        probe = await producer.send_and_wait(
            topic_name(gateway.settings, "fixes.clean"), b"{}", key=b"acme/courier-7"
        )
    finally:
        await producer.stop()

    records = by_fix_id(await consume(gateway.settings, 40))
    assert set(records) == {f["fix_id"] for f in sent}
    assert {r.partition for r in records.values()} == {probe.partition}
    assert len({r.offset for r in records.values()}) == 1  # one record: a JSON array
    assert list(records) == [f["fix_id"] for f in sent]  # in the request's order
    for original in sent:
        record = records[original["fix_id"]]
        assert record.key == b"acme/courier-7"
        stored = decode(IngestedFix, record.value)
        assert (stored.org_id, stored.courier_id, stored.device_id) == (
            "acme",
            "courier-7",
            "phone-7",
        )
        assert stored.schema_version == 1
        ts = original["ts"]
        expected_ts = (
            datetime.fromtimestamp(ts / 1000, UTC)
            if isinstance(ts, int)
            else datetime.fromisoformat(ts)
        )
        assert stored.ts == expected_ts
        assert stored.lat == original["lat"]
        assert stored.lon == original["lon"]
        assert stored.accuracy_m == original["accuracy_m"]
        assert stored.provider == original["provider"]
        assert stored.battery_pct == original["battery_pct"]
        assert stored.is_mock == original["is_mock"]
        assert abs((stored.received_at - datetime.now(UTC)).total_seconds()) < 600


async def test_a_large_request_becomes_records_of_at_most_200_fixes(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-8", "phone-8")
    now_ms = int(time.time() * 1000)
    sent = [fix(ts=now_ms - 600_000 + i * 1000, lat=43.2 + i * 1e-5) for i in range(450)]
    status, answer, _ = await gateway.post(token, {"fixes": sent})
    assert status == 200, answer
    assert answer["accepted"] == 450
    records = await consume(gateway.settings, 450)
    assert [orjson.loads(r.value)["fix_id"] for r in records] == [f["fix_id"] for f in sent]
    per_record = [
        sum(1 for r in records if r.offset == o) for o in sorted({r.offset for r in records})
    ]
    assert per_record == [200, 200, 50]


async def test_gzip_body_is_accepted(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-gz")
    sent = [fix() for _ in range(25)]
    body = gzip.compress(orjson.dumps({"fixes": sent}))
    status, answer, _ = await gateway.post(token, body, headers={"Content-Encoding": "gzip"})
    assert (status, answer["accepted"]) == (200, 25)
    assert set(by_fix_id(await consume(gateway.settings, 25))) == {f["fix_id"] for f in sent}


# Bad fixes -----------------------------------------------------------------------------------


async def test_each_bad_fix_comes_back_with_its_reason_and_good_neighbours_go_through(
    gateway: Gateway,
) -> None:
    token = await gateway.device("acme", "courier-1")
    now = datetime.now(UTC)
    bad: list[tuple[Any, str]] = [
        ({k: v for k, v in fix().items() if k != "lat"}, "missing_field"),
        ({k: v for k, v in fix().items() if k != "fix_id"}, "missing_field"),
        (fix(lat="43.2"), "invalid_type"),
        (fix(lon=True), "invalid_type"),
        (fix(lat=None), "invalid_type"),
        ("not an object", "invalid_type"),
        (fix(lat=90.5), "lat_out_of_range"),
        (fix(lon=-180.01), "lon_out_of_range"),
        (fix(accuracy_m=-1), "accuracy_m_out_of_range"),
        (fix(heading_deg=360), "heading_deg_out_of_range"),
        (fix(ts=(now + timedelta(hours=1)).isoformat()), "ts_in_future"),
        (fix(ts=int((now - timedelta(days=30)).timestamp() * 1000)), "ts_too_old"),
        (fix(ts="2026-01-01T10:00:00"), "invalid_ts"),
        (fix(ts="yesterday"), "invalid_ts"),
        (fix(fix_id="x" * 65), "fix_id_too_long"),
        (fix(fix_id=""), "fix_id_empty"),
        (fix(provider="satellite"), "invalid_provider"),
        (fix(is_mock="no"), "invalid_type"),
    ]
    fixes: list[Any] = []
    good_ids: list[str] = []
    expected: dict[int, str] = {}
    for item, reason in bad:
        good = fix()
        good_ids.append(good["fix_id"])
        fixes.append(good)
        expected[len(fixes)] = reason
        fixes.append(item)
    status, answer, _ = await gateway.post(token, {"fixes": fixes})
    assert status == 200, answer
    assert answer["accepted"] == len(good_ids)
    assert {r["index"]: r["reason"] for r in answer["rejected"]} == expected
    for refusal in answer["rejected"]:
        item = fixes[refusal["index"]]
        fix_id = item.get("fix_id") if isinstance(item, dict) else None
        if isinstance(fix_id, str) and len(fix_id) <= 64:
            assert refusal["fix_id"] == fix_id
        assert refusal["detail"]
    assert set(by_fix_id(await consume(gateway.settings, len(good_ids)))) == set(good_ids)


async def test_nan_and_infinity_are_refused_per_fix(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-nan")
    good = fix()
    # orjson refuses NaN/Infinity literals; the gateway still answers per fix.
    body = (
        b'{"fixes": [' + orjson.dumps(good) + b","
        b'{"fix_id": "n1", "ts": ' + str(int(time.time() * 1000)).encode() + b","
        b' "lat": NaN, "lon": 1.0},'
        b'{"fix_id": "n2", "ts": "' + fix()["ts"].encode() + b'", "lat": 1.0,'
        b' "lon": -Infinity},'
        b'{"fix_id": "n3", "ts": "' + fix()["ts"].encode() + b'", "lat": 1.0, "lon": 1.0,'
        b' "speed_mps": 1e999}]}'
    )
    status, answer, _ = await gateway.post(token, body)
    assert status == 200, answer
    assert answer["accepted"] == 1
    assert [(r["fix_id"], r["reason"]) for r in answer["rejected"]] == [
        ("n1", "not_finite"),
        ("n2", "not_finite"),
        ("n3", "not_finite"),
    ]
    assert set(by_fix_id(await consume(gateway.settings, 1))) == {good["fix_id"]}


async def test_unknown_fields_are_dropped_counted_and_warned(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-2")
    sent = [fix(imei="356938035643809", contact_name="Ann"), fix(imei="x"), fix()]
    status, answer, _ = await gateway.post(token, {"fixes": sent, "debug": True})
    assert status == 200, answer
    assert answer["accepted"] == 3
    warnings = {(w["where"], w["field"]): w for w in answer["warnings"]}
    assert set(warnings) == {("fix", "imei"), ("fix", "contact_name"), ("request", "debug")}
    assert warnings[("fix", "imei")]["count"] == 2
    assert {w["code"] for w in answer["warnings"]} == {"unknown_field_dropped"}

    allowed = {f.name for f in fields(IngestedFix)}
    for record in await consume(gateway.settings, 3):
        keys = set(orjson.loads(record.value))
        assert keys <= allowed
        assert not keys & {"imei", "contact_name", "debug"}

    status, metrics = await gateway.get("/metrics")
    assert status == 200
    assert b"geostream_ingest_unknown_fields_dropped_total 4.0" in metrics


async def test_warnings_are_capped_so_a_small_body_cannot_buy_a_large_answer(
    gateway: Gateway,
) -> None:
    """Issue 16, finding 5: one warning per distinct unknown key, without a cap."""
    token = await gateway.device("acme", "courier-warn")
    fixes = [fix(**{f"junk_{i}_{k}": 1 for k in range(50)}) for i in range(40)]
    body = gzip.compress(orjson.dumps({"fixes": fixes, **{f"top_{i}": 1 for i in range(30)}}))
    status, answer, _ = await gateway.post(token, body, headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert answer["accepted"] == 40
    warnings = answer["warnings"]
    assert len(warnings) == 21
    assert warnings[-1] == {"code": "warnings_truncated", "count": 30 + 40 * 50 - 20}
    assert all(w["code"] == "unknown_field_dropped" for w in warnings[:-1])


async def test_nul_and_lone_surrogates_are_refused_per_fix_never_a_500(gateway: Gateway) -> None:
    """Issue 16, finding 7: a lone surrogate in fix_id gave a 500, a NUL went to the sink's
    dead letters. Written as JSON escapes, as a client would send them."""
    token = await gateway.device("acme", "courier-chars")
    good = fix()
    body = (
        b'{"fixes": [' + orjson.dumps(good) + b","
        b'{"fix_id": "bad\\ud800", "ts": "' + good["ts"].encode() + b'", "lat": 1, "lon": 2},'
        b'{"fix_id": "nul\\u0000", "ts": "' + good["ts"].encode() + b'", "lat": 1, "lon": 2,'
        b' "odd\\udc00key": 1}]}'
    )
    status, answer, _ = await gateway.post(token, body)
    assert status == 200, answer
    assert answer["accepted"] == 1
    assert [(r["index"], r["reason"], r["fix_id"]) for r in answer["rejected"]] == [
        (1, "invalid_characters", None),
        (2, "invalid_characters", None),
    ]
    assert [w["field"] for w in answer["warnings"]] == ["odd\\udc00key"]
    assert set(by_fix_id(await consume(gateway.settings, 1))) == {good["fix_id"]}


async def test_a_token_of_org_a_never_writes_for_org_b(gateway: Gateway) -> None:
    token_a = await gateway.device("org-a", "courier-1", "phone-a")
    await gateway.device("org-b", "courier-1", "phone-b")
    hijack = [
        fix(org_id="org-b", courier_id="courier-1", device_id="phone-b", org="org-b")
        for _ in range(5)
    ]
    status, answer, _ = await gateway.post(
        token_a,
        {"fixes": hijack, "org_id": "org-b", "courier_id": "courier-1", "device_id": "phone-b"},
    )
    assert status == 200, answer
    assert answer["accepted"] == 5
    dropped = {(w["where"], w["field"]) for w in answer["warnings"]}
    assert {("request", "org_id"), ("fix", "org_id"), ("fix", "device_id")} <= dropped
    records = await consume(gateway.settings, 5)
    assert len(records) == 5
    for record in records:
        stored = decode(IngestedFix, record.value)
        assert record.key == b"org-a/courier-1"
        assert (stored.org_id, stored.device_id) == ("org-a", "phone-a")


# Whole-request errors ------------------------------------------------------------------------


async def test_the_gateway_looks_tokens_up_as_its_own_role(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-role")
    assert (await gateway.post(token, {"fixes": [fix()]}))[0] == 200
    assert conninfo_to_dict(gateway.app.pool.conninfo)["user"] == "geostream_gateway"


async def test_401_for_missing_unknown_and_revoked_tokens(gateway: Gateway) -> None:
    body = {"fixes": [fix()]}
    status, answer, headers = await gateway.post(None, body)
    assert (status, answer["error"]) == (401, "missing_token")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, answer, _ = await gateway.post(None, body, headers={"Authorization": "Basic eDp5"})
    assert (status, answer["error"]) == (401, "missing_token")
    status, answer, _ = await gateway.post("gsd_" + "A" * 43, body)
    assert (status, answer["error"]) == (401, "invalid_token")

    token = await gateway.device("acme", "courier-3", "phone-3")
    status, _, _ = await gateway.post(token, body)
    assert status == 200
    assert await gateway.store.revoke("acme", device_id="phone-3") == 1
    status, answer, _ = await gateway.post(token, body)  # cache TTL is 0 in this test
    assert (status, answer["error"]) == (401, "invalid_token")
    assert len(await consume(gateway.settings, 1)) == 1


async def test_an_erased_couriers_cached_tokens_stop_working_at_once(settings: Settings) -> None:
    """The token cache would answer for an hour; the erasure request on privacy.requests
    makes every gateway forget the courier's tokens, and the database then says revoked."""
    cached = settings.model_copy(update={"ingest_token_cache_ttl_s": 3600.0})
    async with running_gateway(cached) as gateway:
        erased_token = await gateway.device("acme", "erased-1", "phone-e1")
        kept_token = await gateway.device("acme", "kept-1", "phone-k1")
        body = {"fixes": [fix()]}
        for token in (erased_token, kept_token):
            assert (await gateway.post(token, body))[0] == 200
        await asyncio.wait_for(gateway.app.revocations.ready.wait(), 30)
        async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
            policy = RetentionPolicy.load(settings.retention_file)
            erased = await erase_in_database(
                conn, settings, policy, "acme", "erased-1", "test", as_api=False
            )
        assert erased.devices == ("phone-e1",)
        producer = create_producer(settings)
        await producer.start()
        try:
            await publish(producer, settings, erased)
        finally:
            await producer.stop()
        for _ in range(100):
            status, answer, _ = await gateway.post(erased_token, body)
            if status != 200:
                break
            await asyncio.sleep(0.05)
        assert (status, answer["error"]) == (401, "invalid_token")
        assert (await gateway.post(kept_token, body))[0] == 200


async def test_a_flood_of_unknown_tokens_is_refused_before_the_database(
    settings: Settings,
) -> None:
    """Finding 6: after its burst of unknown tokens an address gets 429 without a lookup; a
    device whose token the cache knows keeps posting from the same address."""
    limited = settings.model_copy(
        update={"ingest_token_cache_ttl_s": 60.0, "auth_failures_burst": 5.0,
                "auth_failures_per_s": 0.01}
    )  # fmt: skip
    async with running_gateway(limited) as gateway:
        good = await gateway.device("acme", "courier-flood")
        body = {"fixes": [fix()]}
        assert (await gateway.post(good, body))[0] == 200
        store = gateway.app.tokens.store
        lookups = 0
        real_lookup = store.lookup

        async def counted(token_hash: bytes) -> Any:
            nonlocal lookups
            lookups += 1
            return await real_lookup(token_hash)

        store.lookup = counted  # type: ignore[method-assign]
        answers = [
            await gateway.post(f"gsd_{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}", body)
            for _ in range(30)
        ]
        assert [a[1]["error"] for a in answers] == ["invalid_token"] * 5 + [
            "too_many_invalid_tokens"
        ] * 25
        assert {a[0] for a in answers[5:]} == {429}
        assert int(answers[-1][2]["Retry-After"]) >= 1
        assert lookups == 5
        assert (await gateway.post(good, body))[0] == 200


async def test_400_for_malformed_json_and_wrong_shape(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-4")
    cases: list[tuple[bytes, str]] = [
        (b'{"fixes": [', "malformed_json"),
        (b"", "malformed_json"),
        (b"[]", "bad_shape"),
        (b'{"fixes": {"fix_id": "a"}}', "bad_shape"),
        (b'{"points": []}', "bad_shape"),
    ]
    for body, error in cases:
        status, answer, _ = await gateway.post(token, body)
        assert (status, answer["error"]) == (400, error), body
    status, answer, _ = await gateway.post(
        token, b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert (status, answer["error"]) == (400, "bad_gzip")


async def test_413_for_bodies_and_batches_over_the_limits(settings: Settings) -> None:
    small = settings.model_copy(
        update={
            "ingest_max_body_bytes": 64 * 1024,
            "ingest_max_decompressed_bytes": 256 * 1024,
            "ingest_max_batch_fixes": 50,
        }
    )
    async with running_gateway(small) as gateway:
        token = await gateway.device("acme", "courier-5")

        status, answer, _ = await gateway.post(token, {"fixes": [fix() for _ in range(51)]})
        assert (status, answer["error"]) == (413, "too_many_fixes")

        big = orjson.dumps({"fixes": [fix(pad="x" * 1000) for _ in range(100)]})
        assert len(big) > 64 * 1024
        status, answer, _ = await gateway.post(token, big)
        assert (status, answer["error"]) == (413, "body_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        async with gateway.session.post(
            f"{gateway.url}/v1/fixes",
            data=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 413  # chunked: no Content-Length, capped while reading
            assert (await response.json())["error"] == "body_too_large"

        bomb = gzip.compress(b'{"fixes": [' + b" " * (50 * 1024 * 1024) + b"]}")
        assert len(bomb) < 64 * 1024
        status, answer, _ = await gateway.post(token, bomb, headers={"Content-Encoding": "gzip"})
        assert (status, answer["error"]) == (413, "body_too_large")

        # A declared 1 GiB body is refused from the headers alone: nothing of it is sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v1/fixes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413")
        assert b"connection: close" in head.lower()
        writer.close()

        # Refused before the body is read (here: no token), the connection is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v1/fixes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 401")
        assert b"connection: close" in head.lower()
        writer.close()

        status, answer, _ = await gateway.post(token, {"fixes": [fix()]})
        assert status == 200


async def test_415_for_wrong_content_type_or_encoding(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-6")
    body = orjson.dumps({"fixes": [fix()]})
    status, answer, _ = await gateway.post(token, body, headers={"Content-Type": "text/plain"})
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    status, answer, _ = await gateway.post(token, body, headers={"Content-Encoding": "br"})
    assert (status, answer["error"]) == (415, "unsupported_encoding")
    status, _, _ = await gateway.post(
        token, body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200


async def test_429_with_retry_after_when_a_device_exceeds_its_rate(settings: Settings) -> None:
    slow = settings.model_copy(update={"ingest_rate_per_s": 0.01, "ingest_rate_burst": 2})
    async with running_gateway(slow) as gateway:
        token = await gateway.device("acme", "courier-8")
        other = await gateway.device("acme", "courier-9")
        assert (await gateway.post(token, {"fixes": [fix()]}))[0] == 200
        assert (await gateway.post(token, {"fixes": [fix()]}))[0] == 200
        status, answer, headers = await gateway.post(token, {"fixes": [fix()]})
        assert (status, answer["error"]) == (429, "rate_limited")
        assert int(headers["Retry-After"]) >= 1
        assert (await gateway.post(other, {"fixes": [fix()]}))[0] == 200  # per device
        assert len(await consume(slow, 3)) == 3


async def test_503_with_retry_after_when_kafka_is_unreachable(settings: Settings) -> None:
    nowhere = settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "ingest_produce_timeout_s": 1.0,
            "ingest_retry_after_s": 7,
        }
    )
    async with running_gateway(nowhere) as gateway:
        token = await gateway.device("acme", "courier-10")
        status, answer, headers = await gateway.post(token, {"fixes": [fix()]})
        assert (status, answer["error"]) == (503, "kafka_unavailable")
        assert headers["Retry-After"] == "7"
        status, body = await gateway.get("/readyz")
        assert status == 503
        kafka = orjson.loads(body)["kafka"]
        assert (kafka["ok"], kafka["detail"]) == (False, "unavailable")  # no address, no error
        status, _ = await gateway.get("/healthz")
        assert status == 200


#: For tests whose one device posts many requests at once.
NO_RATE_LIMIT = {"ingest_rate_per_s": 1000.0, "ingest_rate_burst": 1000.0}


@contextlib.contextmanager
def broker_paused() -> Iterable[None]:
    """The real broker stopped in its tracks (SIGSTOP): connections stay open, nothing answers."""
    pid = pid_alive(Stack(get_settings()).kafka.pid_file)
    assert pid is not None, "the stack's Kafka is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_stalled_broker_gets_503_with_retry_after_and_the_producer_stays(
    settings: Settings,
) -> None:
    """Acks that do not come are the broker's state: devices are told to come back later, the
    producer is kept (a new one would only add connection set-up to the load), and nothing
    acknowledged is lost. The wait outlasts the producer's request timeout (15 s), after which
    aiokafka fails the stuck batches with KafkaTimeoutError: the old gateway replaced its
    producer on that."""
    slow = settings.model_copy(
        update={"ingest_produce_timeout_s": 20.0, "ingest_retry_after_s": 4, **NO_RATE_LIMIT}
    )
    async with running_gateway(slow) as gateway:
        token = await gateway.device("acme", "courier-stall")
        before = [fix() for _ in range(5)]
        status, _, _ = await gateway.post(token, {"fixes": before})
        assert status == 200
        producer = gateway.app.producer._producer
        during = [[fix() for _ in range(5)] for _ in range(20)]
        with broker_paused():
            posts = [
                asyncio.create_task(gateway.post(token, {"fixes": upload})) for upload in during
            ]
            done, _ = await asyncio.wait(posts, timeout=60, return_when=asyncio.FIRST_COMPLETED)
            assert done, "no answer while the broker was stalled"
        answers = await asyncio.gather(*posts)
        refused = [
            (status, answer, headers) for status, answer, headers in answers if status != 200
        ]
        assert refused, "the stalled broker refused nothing"
        for status, answer, headers in refused:
            assert (status, answer["error"], headers["Retry-After"]) == (
                503,
                "kafka_unavailable",
                "4",
            )
        assert gateway.app.producer._producer is producer
        assert gateway.app.producer.replaced == 0
        after = [fix() for _ in range(5)]
        status, _, _ = await gateway.post(token, {"fixes": after})
        assert status == 200
    acked = {f["fix_id"] for f in before + after}
    for (status, _, _), upload in zip(answers, during, strict=True):
        if status == 200:
            acked |= {f["fix_id"] for f in upload}
    records = by_fix_id(await consume(slow, len(acked), settle_s=3.0))
    assert not acked - set(records), "acknowledged fixes are missing"


async def test_a_backlog_of_unacked_fixes_gets_503_at_once(settings: Settings) -> None:
    tight = settings.model_copy(
        update={"ingest_max_pending_fixes": 10, "ingest_produce_timeout_s": 20.0, **NO_RATE_LIMIT}
    )
    async with running_gateway(tight) as gateway:
        token = await gateway.device("acme", "courier-backlog")
        with broker_paused():
            first = gateway.post(token, {"fixes": [fix() for _ in range(8)]})
            waiting = asyncio.ensure_future(first)
            while gateway.app.producer.pending < 8:
                assert not waiting.done()
                await asyncio.sleep(0.01)
            status, answer, headers = await gateway.post(token, {"fixes": [fix(), fix(), fix()]})
            assert (status, answer["error"]) == (503, "kafka_backlog")
            assert headers["Retry-After"] == str(tight.ingest_retry_after_s)
        status, _, _ = await waiting
        assert status in (200, 503)
        status, _, _ = await gateway.post(token, {"fixes": [fix(), fix(), fix()]})
        assert status == 200


async def test_a_producer_whose_sender_stopped_is_replaced(gateway: Gateway) -> None:
    token = await gateway.device("acme", "courier-sender")
    status, _, _ = await gateway.post(token, {"fixes": [fix()]})
    assert status == 200
    broken = gateway.app.producer._producer
    assert broken is not None
    sender = broken._sender.sender_task
    sender.cancel()  # a sender task that ended, as aiokafka's fatal errors leave it
    await asyncio.wait([sender])
    sent = fix()
    status, answer, _ = await gateway.post(token, {"fixes": [sent]})
    assert status == 200, answer
    assert gateway.app.producer.replaced == 1
    assert gateway.app.producer._producer is not broken
    assert sent["fix_id"] in by_fix_id(await consume(gateway.settings, 2))


async def test_devices_seen_recently_post_through_a_database_outage(settings: Settings) -> None:
    """Kafka is the buffer: with PostgreSQL stopped, a device whose token was resolved lately
    is still taken (a bounded stale cache entry); an unknown token gets 503, not 401."""
    quick = settings.model_copy(
        update={"ingest_token_cache_ttl_s": 0.2, "ingest_token_stale_s": 600.0}
    )
    postgres = Stack(get_settings()).postgres
    async with running_gateway(quick) as gateway:
        suffix = uuid.uuid4().hex[:8]
        known, unseen = await gateway.store.create_many(
            "acme", [("courier-db-1", f"db1-{suffix}"), ("courier-db-2", f"db2-{suffix}")]
        )
        before = [fix()]
        status, _, _ = await gateway.post(known, {"fixes": before})
        assert status == 200
        await asyncio.to_thread(postgres.stop)
        try:
            await asyncio.sleep(0.3)  # past the cache's TTL: a fresh entry would be asked for
            during = [fix() for _ in range(3)]
            status, answer, _ = await gateway.post(known, {"fixes": during})
            assert (status, answer["accepted"]) == (200, 3)
            status, answer, headers = await gateway.post(unseen, {"fixes": [fix()]})
            assert (status, answer["error"]) == (503, "token_store_unavailable")
            assert headers["Retry-After"] == str(quick.ingest_retry_after_s)
        finally:
            await asyncio.to_thread(postgres.start)
        status, _, _ = await gateway.post(unseen, {"fixes": [fix()]})
        assert status == 200
    records = by_fix_id(await consume(quick, 5))
    assert {f["fix_id"] for f in before + during} <= set(records)


# Health and metrics --------------------------------------------------------------------------


async def test_readyz_healthz_and_metrics(gateway: Gateway) -> None:
    status, body = await gateway.get("/healthz")
    assert (status, orjson.loads(body)) == (200, {"status": "alive"})
    status, body = await gateway.get("/readyz")
    ready = orjson.loads(body)
    assert status == 200
    assert ready["kafka"]["ok"] is True
    assert ready["kafka"]["topic"] == topic_name(gateway.settings, "fixes.raw")

    token = await gateway.device("acme", "courier-11")
    await gateway.post(token, {"fixes": [fix(), fix(), fix(lat=100)]})
    await gateway.post(None, {"fixes": []})
    status, body = await gateway.get("/metrics")
    assert status == 200
    text = body.decode()
    assert "geostream_ingest_fixes_accepted_total 2.0" in text
    assert 'geostream_ingest_fixes_rejected_total{reason="lat_out_of_range"} 1.0' in text
    assert 'geostream_ingest_requests_total{path="/v1/fixes",status="200"} 1.0' in text
    assert 'geostream_ingest_requests_total{path="/v1/fixes",status="401"} 1.0' in text
    assert "geostream_ingest_produce_seconds_count 1.0" in text
    assert 'geostream_ingest_batch_fixes_bucket{le="5.0"} 1.0' in text
    assert "geostream_ingest_requests_in_flight 0.0" in text


# Broker restart ------------------------------------------------------------------------------


async def test_gateway_survives_a_broker_restart_without_losing_acked_fixes(
    settings: Settings,
) -> None:
    """503 while Kafka is down, 200 again after it is back, every acked fix in fixes.raw."""
    quick = settings.model_copy(
        update={"ingest_produce_timeout_s": 3.0, "ingest_rate_per_s": 1000.0}
    )
    node = Stack(get_settings()).kafka
    acked: set[str] = set()
    statuses: list[int] = []
    async with running_gateway(quick) as gateway:
        token = await gateway.device("acme", "courier-restart")
        stop = asyncio.Event()

        async def device() -> None:
            while not stop.is_set():
                batch = [fix() for _ in range(20)]
                try:
                    status, answer, _ = await gateway.post(token, {"fixes": batch})
                except aiohttp.ClientError:
                    status = 0
                statuses.append(status)
                if status == 200:
                    assert answer["accepted"] == 20
                    acked.update(f["fix_id"] for f in batch)
                await asyncio.sleep(0.05)

        poster = asyncio.create_task(device())
        try:
            while len(acked) < 100:
                assert not poster.done()
                await asyncio.sleep(0.1)
            await asyncio.to_thread(node.stop)
            seen = len(statuses)
            while 503 not in statuses[seen:]:
                assert not poster.done()
                await asyncio.sleep(0.1)
        finally:
            await asyncio.to_thread(node.start)
        try:
            back = len(statuses)
            deadline = time.monotonic() + 120
            while statuses[back:].count(200) < 5:
                assert time.monotonic() < deadline, f"no recovery: {statuses[back:][-20:]}"
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await poster
    assert 503 in statuses
    records = by_fix_id(await consume(quick, len(acked), settle_s=3.0))
    missing = acked - set(records)
    assert not missing, f"{len(missing)} acknowledged fixes are missing"
