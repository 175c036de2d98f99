"""Per-organisation isolation on the real database: analyst logins and the API role."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import psycopg
import pytest
from sink_support import event, fix, stop, trip

from config.settings import Settings, get_settings
from geostream.db import SERVICE_ROLES, create_pool, service_database_url
from geostream.tokens import hash_token
from ingest.tokens import TokenStore
from sinks.isolation import (
    IsolationError,
    check_org,
    create_analyst,
    drop_analyst,
    org_transaction,
)
from sinks.rows import TOPIC_TABLES
from sinks.writer import write_batch

pytestmark = pytest.mark.stack

TABLES = ("positions", "stops", "trips", "courier_events", "latest_positions", "courier_daily")


@pytest.fixture
async def two_orgs(database_url: str) -> Settings:
    """A database holding rows of org 'red' and org 'blue' in every table."""
    grouped: dict = {}
    for org in ("red", "blue"):
        for record in (fix(org=org), stop(org=org), trip(org=org), event(org=org)):
            table = next(t for t in TOPIC_TABLES.values() if isinstance(record, t.record_type))
            grouped.setdefault(table, []).append(table.to_row(record))
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await write_batch(conn, grouped)
        for org in ("red", "blue"):
            await conn.execute(
                "INSERT INTO courier_daily (org_id, courier_id, day, expires_at)"
                " VALUES (%s, 'c1', %s, now() + interval '1 day')",
                (org, date.today()),
            )
        await conn.commit()
    return get_settings().model_copy(update={"database_url": database_url})


def orgs_seen(conn: psycopg.Connection, table: str) -> set[str]:
    return {row[0] for row in conn.execute(f"SELECT org_id FROM {table}").fetchall()}


def test_analyst_sees_only_its_org_in_every_table(two_orgs: Settings) -> None:
    role, url = create_analyst(two_orgs, "red")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for table in TABLES:
                assert orgs_seen(conn, table) == {"red"}, table
            # Neither a session setting nor SET ROLE to the group widens what it sees.
            conn.execute("SELECT set_config('geostream.org_id', 'blue', false)")
            conn.execute("SET ROLE geostream_analyst")
            for table in TABLES:
                assert orgs_seen(conn, table) == {"red"}, table
            conn.execute("RESET ROLE")
            # Nor can it read the mapping, write, or read a chunk directly.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM analyst_orgs")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM positions")
            chunk = conn.execute(
                "SELECT format('%I.%I', chunk_schema, chunk_name)"
                " FROM timescaledb_information.chunks WHERE hypertable_name = 'positions'"
            ).fetchone()
            assert chunk is not None
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT org_id FROM {chunk[0]}")
    finally:
        assert drop_analyst(two_orgs, role)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url).close()


def test_no_role_reads_other_orgs_ids_from_chunk_statistics(two_orgs: Settings) -> None:
    """Finding 3 of issue 16: pg_stats shows a chunk's most common org, courier and trip ids to
    anyone with SELECT on it (TimescaleDB copies the grants), unless its row security is on;
    the writer turns it on in the transaction that makes the chunk."""
    with psycopg.connect(two_orgs.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        chunks = conn.execute(
            "SELECT c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'geostream_chunks' AND c.relkind = 'r'"
        ).fetchall()
        assert chunks
        assert {secured for (secured,) in chunks} == {True}
        stats = "SELECT count(*) FROM pg_stats WHERE attname IN ('org_id', 'courier_id')"
        owner_sees = conn.execute(stats).fetchone()
        assert owner_sees is not None
        assert owner_sees[0] > 0  # the statistics exist: the owner may see them
    role, analyst_url = create_analyst(two_orgs, "red")
    try:
        logins = {"analyst": analyst_url, "api": service_database_url(two_orgs, "api")}
        for who, url in logins.items():
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute(stats).fetchone() == (0,), who
    finally:
        assert drop_analyst(two_orgs, role)


def test_create_analyst_command_prints_url_last(two_orgs: Settings) -> None:
    env_url = two_orgs.database_url
    out = subprocess.run(
        [sys.executable, "-m", "geostream.cli", "admin", "create-analyst", "--org", "blue"],
        capture_output=True, text=True, check=True,
        env={"GEOSTREAM_DATABASE_URL": env_url, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    url = out.stdout.strip().splitlines()[-1]
    role = url.split("//", 1)[1].split(":", 1)[0]
    try:
        with psycopg.connect(url) as conn:
            assert orgs_seen(conn, "positions") == {"blue"}
            assert orgs_seen(conn, "stops") == {"blue"}
    finally:
        drop_analyst(two_orgs, role)


def test_analyst_rejects_bad_org() -> None:
    with pytest.raises(IsolationError):
        check_org("red'; DROP TABLE positions; --")
    with pytest.raises(IsolationError):
        check_org("")


async def test_api_role_sees_only_the_request_org(two_orgs: Settings) -> None:
    url = service_database_url(two_orgs, "api")
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for org in ("red", "blue"):
            async with org_transaction(conn, org):
                for table in TABLES:
                    cur = await conn.execute(f"SELECT DISTINCT org_id FROM {table}")
                    assert await cur.fetchall() == [(org,)], table
        # After the transaction the org is forgotten: nothing, not everything.
        for table in TABLES:
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            assert await cur.fetchone() == (0,), table
        await conn.rollback()
        async with org_transaction(conn, "green"):  # an org with no rows
            cur = await conn.execute("SELECT count(*) FROM positions")
            assert await cur.fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE positions SET org_id = 'red'")
        await conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("SELECT * FROM analyst_orgs")


def test_api_role_without_org_setting_sees_nothing(two_orgs: Settings) -> None:
    with psycopg.connect(service_database_url(two_orgs, "api"), autocommit=True) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        conn.execute("SELECT set_config('geostream.org_id', '', false)")
        assert conn.execute("SELECT count(*) FROM positions").fetchone() == (0,)
    # The owner (the sink) sees both orgs: the rows really are there.
    with psycopg.connect(two_orgs.database_url) as conn:
        assert orgs_seen(conn, "positions") == {"red", "blue"}


async def test_each_service_role_may_do_its_job_and_nothing_more(two_orgs: Settings) -> None:
    """Finding 2: the gateway only asks who a token is, the sink only writes, and no service
    role is a superuser or owns a table."""
    async with create_pool(two_orgs) as pool:  # the owner enrols a device
        token = await TokenStore(pool).create("red", "c9", "phone-9")
    urls = {service: service_database_url(two_orgs, service) for service in SERVICE_ROLES}
    for service, url in urls.items():
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            # only the sink, which writes every org's rows, is not subject to row security
            bypass = service == "sink"
            assert row == (SERVICE_ROLES[service], False, False, False, bypass), service
            owned = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tableowner = current_user"
            ).fetchone()
            assert owned == (0,), service
            forbidden_statements = (
                "SELECT * FROM device_tokens",
                "SELECT * FROM analyst_orgs",
                "SELECT * FROM privacy_requests",
                "DELETE FROM positions",
            )
            for forbidden in forbidden_statements:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(forbidden)

    with psycopg.connect(urls["gateway"], autocommit=True) as conn:
        found = conn.execute("SELECT * FROM device_for_token(%s)", (hash_token(token),))
        assert found.fetchall() == [("red", "c9", "phone-9")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM positions")

    # The sink writes through the real writer, erasure checks included.
    async with await psycopg.AsyncConnection.connect(urls["sink"]) as conn:
        written = await write_batch(conn, {TOPIC_TABLES["fixes.clean"]: [
            TOPIC_TABLES["fixes.clean"].to_row(fix(org="green", courier="g1"))]})  # fmt: skip
        assert written.rows["positions"] == 1
    with psycopg.connect(urls["sink"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM device_for_token(''::bytea)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE positions")
