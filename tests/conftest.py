"""Fixtures that bring up the real local stack and give each test its own resources.

Every test that touches Kafka or PostgreSQL gets its own topic prefix and its own database
(created from template1, which carries PostGIS and TimescaleDB, then migrated), so the suite can
run again and again on the same stack, and tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from config.settings import Settings, get_settings
from geostream.kafka import admin_client, create_topics, topic_specs
from geostream.stack import Stack
from sinks.migrate import migrate


@pytest.fixture(scope="session")
def stack() -> Stack:
    """The local stack, brought up (a no-op when it is up already) and healthy."""
    stack = Stack(get_settings())
    stack.up()
    status = stack.status()
    assert status["healthy"], status
    return stack


@pytest.fixture
def database_url(stack: Stack) -> Iterator[str]:
    """A fresh, migrated database of this test's own; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    owner_url = stack.postgres.url()
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = stack.postgres.url(database=name)
    migrate(url)
    yield url
    # As the superuser: FORCE must end every session, also those of other roles (the API's).
    with psycopg.connect(stack.postgres.url("postgres", "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def settings(stack: Stack, database_url: str) -> AsyncIterator[Settings]:
    """Settings pointing at this test's own topics (created) and database."""
    prefix = f"test.{uuid.uuid4().hex[:10]}."
    test_settings = get_settings().model_copy(
        update={"topic_prefix": prefix, "database_url": database_url}
    )
    await create_topics(test_settings)
    yield test_settings
    admin = admin_client(test_settings)
    await admin.start()
    try:
        await admin.delete_topics([prefix + name for name in topic_specs(test_settings)])
    finally:
        await admin.close()
