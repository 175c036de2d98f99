"""Fuzzing the real gateway and API (issue 16): bodies, headers, query strings, ids and times
made to break them.

``geostream ingest`` and ``geostream api`` run as processes on the test's topics and database.
Every answer must be below 500; every refusal must carry its reason (the gateway's ``error``
code, the API's ``detail``); every fix the gateway acknowledged must be in ``fixes.raw``
afterwards. ``make test`` runs ``GEOSTREAM_FUZZ_CASES`` cases (default 300, half per service);
``make fuzz`` runs 100,000 and prints the tally.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from sink_support import read_all

from config.settings import Settings, get_settings
from geostream.db import create_pool
from geostream.kafka import create_topics
from geostream.stack import Stack
from geostream.stack.system import free_port, wait_for_port
from ingest.tokens import TokenStore
from sinks.api.auth import create_dispatcher
from sinks.migrate import migrate

pytestmark = pytest.mark.stack

#: Cases in all, shared by the gateway's and the API's fuzzer.
CASES = int(os.environ.get("GEOSTREAM_FUZZ_CASES", "300"))
EXAMPLES = max(CASES // 2, 1)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
REASON = re.compile(r"^[a-z0-9_]+$")
TALLY: Counter[str] = Counter()


class Services:
    """The two processes and what the tests share: tokens, acknowledged fix ids."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.ingest_port, self.api_port = free_port(), free_port()
        env = {
            **os.environ,
            "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "GEOSTREAM_DATABASE_URL": settings.database_url,
            "GEOSTREAM_INGEST_PORT": str(self.ingest_port),
            "GEOSTREAM_API_PORT": str(self.api_port),
            # the fuzzer is one client sending as fast as it can: no rate limit to hide behind
            "GEOSTREAM_INGEST_RATE_PER_S": "1000000",
            "GEOSTREAM_INGEST_RATE_BURST": "1000000",
            "GEOSTREAM_AUTH_FAILURES_PER_S": "1000000",
            "GEOSTREAM_AUTH_FAILURES_BURST": "1000000",
        }
        self.log = (tmp / "fuzz-services.log").open("w")
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "geostream.cli", name],
                env=env,
                stdout=self.log,
                stderr=subprocess.STDOUT,
            )
            for name in ("ingest", "api")
        ]
        for port in (self.ingest_port, self.api_port):
            wait_for_port("127.0.0.1", port, 60, "a fuzzed service", tmp / "fuzz-services.log")
        self.device_token = ""
        self.dispatcher_token = ""
        self.acknowledged: set[str] = set()

    def request(
        self, port: int, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def fuzz_settings(stack: Stack) -> Iterator[Settings]:
    """A database and topics of the module's own (the fuzzers share them)."""
    name = f"fuzz_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack.postgres.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = stack.postgres.url(database=name)
    migrate(url)
    fuzz = get_settings().model_copy(
        update={"topic_prefix": f"fuzz.{uuid.uuid4().hex[:8]}.", "database_url": url}
    )
    asyncio.run(create_topics(fuzz))
    yield fuzz
    with psycopg.connect(stack.postgres.url("postgres", "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def services(
    fuzz_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    settings_ = fuzz_settings
    running = Services(settings_, tmp_path_factory.mktemp("fuzz"))

    async def enrol() -> None:
        async with create_pool(settings_) as pool:
            running.device_token = await TokenStore(pool).create("fuzz", "c1", "phone-1")
            async with pool.connection() as conn:
                running.dispatcher_token = await create_dispatcher(
                    conn, "fuzz", "ops", is_operator=True
                )
        async with await psycopg.AsyncConnection.connect(settings_.database_url) as conn:
            await conn.execute(
                "INSERT INTO latest_positions (org_id, courier_id, ts, device_id, fix_id, geom,"
                " received_at, expires_at) VALUES ('fuzz', 'c1', now(), 'phone-1', 'f',"
                " ST_SetSRID(ST_MakePoint(76.9, 43.2), 4326), now(), now() + interval '1 day')"
            )

    asyncio.run(enrol())
    try:
        yield running
    finally:
        running.stop()
        answers = {k: v for k, v in sorted(TALLY.items()) if k[-3:].isdigit()}
        errors = sum(v for k, v in answers.items() if int(k[-3:]) >= 500)
        print(f"\nfuzz: {sum(answers.values())} cases, {errors} server errors; {answers};"
              f" {TALLY['acknowledged fixes']} acknowledged fixes,"
              f" {TALLY.get('lost fixes', 'unchecked')} lost")  # fmt: skip


# -- what the fuzzer sends -----------------------------------------------------------------------

NOW = datetime.now(UTC)
texts = st.text(st.characters(codec="utf-8"), max_size=40) | st.text(max_size=8)
numbers = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -0.0, 90, 90.0000001, -180, 180.5, 360, 1e308])
)
times = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),  # naive: refused
    st.integers(min_value=-(2**63), max_value=2**63).map(str),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(min_value=0, max_value=1e5).map(lambda s: (NOW - timedelta(seconds=s)).isoformat()),
    st.just((NOW - timedelta(minutes=1)).isoformat()),
    texts,
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def fix_objects(draw: st.DrawFn) -> Any:
    """Mostly fix-shaped objects with any field replaced, dropped or added; sometimes not."""
    # (hypothesis favours small draws: the common case is 0, the odd one the largest)
    if draw(st.integers(0, 9)) == 9:
        return draw(json_values)

    def field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(good if draw(st.integers(0, 9)) < 8 else bad)  # mostly good: some land

    recent = st.floats(1, 3600).map(lambda s: datetime.now(UTC) - timedelta(seconds=s))
    fix: dict[str, Any] = {
        # fresh ids, so that "nothing acknowledged is lost" counts many different fixes
        "fix_id": field(st.builds(lambda: uuid.uuid4().hex), texts | json_values),
        "ts": field(recent.map(lambda t: t.isoformat()), times),
        "lat": field(st.floats(-90, 90), numbers | json_values),
        "lon": field(st.floats(-180, 180), numbers | json_values),
    }
    for optional in ("accuracy_m", "speed_mps", "heading_deg", "altitude_m", "battery_pct"):
        if draw(st.booleans()):
            fix[optional] = field(st.floats(0, 100), numbers | json_values)
    if draw(st.booleans()):
        fix["provider"] = draw(st.sampled_from(["gps", "network", "fused"]) | texts)
    if draw(st.booleans()):
        fix["is_mock"] = draw(st.booleans() | json_values)
    for key in draw(st.lists(st.sampled_from(list(fix)), max_size=2)):
        fix.pop(key, None)
    if draw(st.integers(0, 3)) == 0:
        fix.update(draw(st.dictionaries(texts, json_values, max_size=3)))
    return fix


@st.composite
def gateway_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], list[Any]]:
    fixes = draw(st.lists(fix_objects(), min_size=draw(st.sampled_from([1, 0])), max_size=8))
    shape = draw(st.integers(0, 9))
    if shape == 9:
        body, fixes = draw(st.binary(max_size=200)), []
    elif shape == 8:
        body, fixes = json.dumps(draw(json_values)).encode(), []
    else:
        document: dict[str, Any] = {"fixes": fixes}
        document.update(draw(st.dictionaries(texts, json_values, max_size=2)))
        text = json.dumps(document, allow_nan=True)
        if draw(st.booleans()):  # lone surrogates and NULs as JSON escapes
            text = text.replace("a", draw(st.sampled_from(["a", "\\ud800", "\\u0000"])), 1)
        body = text.encode()
    headers = {"Content-Type": draw(st.sampled_from(
        ["application/json"] * 6 + ["application/json; charset=utf-8", "text/plain", "", "x/y"]
    ))}  # fmt: skip
    if draw(st.integers(0, 9)) == 9:
        body = gzip.compress(body) if draw(st.booleans()) else draw(st.binary(max_size=50))
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "br", "identity", "GZIP"]))
    auth = draw(st.sampled_from(["valid"] * 6 + ["none", "bogus", "basic", "text"]))
    headers["Authorization"] = {
        "valid": "Bearer {device}",
        "none": "",
        "bogus": f"Bearer gsd_{uuid.uuid4().hex}",
        "basic": "Basic eDp5",
        "text": "Bearer " + draw(st.text(st.characters(min_codepoint=33, max_codepoint=126))),
    }[auth]
    return body, headers, fixes


API_PATHS = [
    "/v1/couriers/latest",
    "/v1/couriers/{c}/track",
    "/v1/couriers/{c}/trips",
    "/v1/couriers/{c}/stops",
    "/v1/couriers/{c}/export",
    "/v1/zones/{c}/couriers",
    "/v1/audit",
]
query_values = st.one_of(
    times.map(str), texts, st.integers().map(str), st.sampled_from(["", "json", "gpx", "csv"])
)


@st.composite
def api_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str]]:
    path = draw(st.sampled_from(API_PATHS)).replace(
        "{c}", quote(draw(st.sampled_from(["c1", "nobody"]) | texts), safe="")
    )
    keys = st.sampled_from(["from", "to", "limit", "cursor", "simplify", "format", "courier"])
    query = draw(st.dictionaries(keys | texts, query_values, max_size=4))
    if query:
        path += "?" + urlencode(query)
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "DELETE"]))
    if method == "DELETE":
        path = "/v1/couriers/nobody-" + uuid.uuid4().hex[:6] + "/data"  # erases nobody real
    token = draw(st.sampled_from(["valid", "valid", "none", "bogus"]))
    headers = {
        "valid": {"Authorization": "Bearer {dispatcher}"},
        "none": {},
        "bogus": {"Authorization": f"Bearer gsk_{uuid.uuid4().hex}"},
    }[token]
    return method, path, headers


# -- the properties ------------------------------------------------------------------------------


def fill(headers: dict[str, str], services: Services) -> dict[str, str]:
    return {
        k: v.replace("{device}", services.device_token).replace(
            "{dispatcher}", services.dispatcher_token
        )
        for k, v in headers.items()
        if v
    }


@FUZZ
@given(case=gateway_requests())
def test_the_gateway_never_fails_and_loses_nothing_it_acknowledged(
    services: Services, case: tuple[bytes, dict[str, str], list[Any]]
) -> None:
    body, headers, fixes = case
    status, answer = services.request(
        services.ingest_port, "POST", "/v1/fixes", body, fill(headers, services)
    )
    TALLY[f"gateway {status}"] += 1
    assert status < 500, answer[:500]
    document = json.loads(answer)
    if status != 200:
        assert REASON.match(document["error"]), document
        return
    refused = {item["index"] for item in document["rejected"]}
    assert all(REASON.match(item["reason"]) for item in document["rejected"]), document
    accepted = [f["fix_id"] for i, f in enumerate(fixes) if i not in refused]
    assert document["accepted"] == len(accepted)
    services.acknowledged.update(accepted)


@FUZZ
@given(case=api_requests())
def test_the_api_never_fails_and_always_says_why(
    services: Services, case: tuple[str, str, dict[str, str]]
) -> None:
    method, path, headers = case
    status, answer = services.request(services.api_port, method, path, b"", fill(headers, services))
    TALLY[f"api {status}"] += 1
    assert status < 500, (method, path, answer[:500])
    if status >= 400:
        assert json.loads(answer)["detail"], answer[:500]


def test_every_acknowledged_fix_is_in_kafka(services: Services) -> None:
    """Runs after the gateway's fuzzing (file order): nothing it acknowledged is missing."""
    wanted = services.acknowledged
    values = asyncio.run(read_all(services.settings, "fixes.raw", 10**9, timeout_s=10))
    stored: set[str] = set()
    for value in values:
        decoded = json.loads(value)
        for record in decoded if isinstance(decoded, list) else [decoded]:
            if "fix_id" in record:  # (an erasure request from the API's fuzzing is not a fix)
                stored.add(record["fix_id"])
    TALLY["acknowledged fixes"] = len(wanted)
    missing = wanted - stored
    TALLY["lost fixes"] = len(missing)
    assert not missing, f"{len(missing)} acknowledged fixes are not in fixes.raw"
