"""Per-organisation isolation: the API's restricted role and analysts' login roles.

The policies themselves are in ``sinks/migrations/0004_org_isolation.sql``; this module issues
the credentials and sets the org of an API transaction:

* each service connects as its own role (:func:`geostream.db.service_database_url`; migration
  0014); the dispatcher API's, ``geostream_api``, wraps every request in
  :func:`org_transaction`, which sets ``geostream.org_id`` for that transaction only;
* ``geostream admin create-analyst --org ORG`` makes a LOGIN role mapped to one org
  (:func:`create_analyst`); the mapping is keyed by the session's login role, so an analyst
  cannot widen it by setting anything.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from config.settings import Settings
from geostream.db import database_url, url_for_role

ANALYST_GROUP = "geostream_analyst"
_ORG_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class IsolationError(ValueError):
    """A bad org id or role request, with a message for the operator."""


def check_org(org_id: str) -> str:
    """``org_id`` if it is a valid org identifier (the records' Identifier pattern)."""
    if not _ORG_PATTERN.match(org_id):
        raise IsolationError(f"invalid org id {org_id!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -")
    return org_id


@asynccontextmanager
async def org_transaction(
    conn: AsyncConnection[Any], org_id: str
) -> AsyncIterator[AsyncConnection[Any]]:
    """A transaction in which ``geostream_api`` sees ``org_id``'s rows and no others.

    ``set_config(..., true)`` is local to the transaction: when it ends, the pooled
    connection forgets the org, so the next request cannot inherit it.
    """
    check_org(org_id)
    async with conn.transaction():
        await conn.execute("SELECT set_config('geostream.org_id', %s, true)", (org_id,))
        yield conn


def analyst_role_name(org_id: str) -> str:
    """A fresh role name for an analyst of ``org_id``: readable and unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", org_id.lower()).strip("_")[:32] or "org"
    return f"analyst_{slug}_{secrets.token_hex(4)}"


def create_analyst(settings: Settings, org_id: str) -> tuple[str, str]:
    """Create a LOGIN role that reads only ``org_id``'s rows; returns (role, connection URL).

    Role and mapping are made in one transaction, so a role never exists unmapped (an
    unmapped analyst would see nothing, but should not exist at all).
    """
    check_org(org_id)
    owner_url = database_url(settings)
    role = analyst_role_name(org_id)
    password = secrets.token_urlsafe(24)
    with psycopg.connect(owner_url) as conn, conn.transaction():
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} CONNECTION LIMIT 10 IN ROLE {}").format(
                sql.Identifier(role), sql.Literal(password), sql.Identifier(ANALYST_GROUP)
            )
        )
        conn.execute("INSERT INTO analyst_orgs (role_name, org_id) VALUES (%s, %s)", (role, org_id))
    return role, url_for_role(owner_url, role, password)


def drop_analyst(settings: Settings, role: str) -> bool:
    """Remove an analyst role and its mapping; False if it was not an analyst of this DB."""
    with psycopg.connect(database_url(settings)) as conn, conn.transaction():
        mapped = conn.execute(
            "DELETE FROM analyst_orgs WHERE role_name = %s RETURNING 1", (role,)
        ).fetchone()
        if mapped is None:
            return False
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    return True
