"""Per-organisation isolation: the API's restricted role and analysts' login roles.

The policies themselves are in ``sinks/migrations/0004_org_isolation.sql``; this module issues
the credentials and sets the org of an API transaction:

* each service connects as its own role (:func:`service_database_url`; migration 0014); the
  dispatcher API's, ``geostream_api``, wraps every request in :func:`org_transaction`, which
  sets ``geostream.org_id`` for that transaction only;
* ``geostream admin create-analyst --org ORG`` makes a LOGIN role mapped to one org
  (:func:`create_analyst`); the mapping is keyed by the session's login role, so an analyst
  cannot widen it by setting anything.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import quote

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict

from config.settings import Settings
from geostream.db import database_url

API_ROLE = "geostream_api"
Service = Literal["gateway", "sink", "api"]
#: The login role of each service (migrations 0004 and 0014).
SERVICE_ROLES: dict[Service, str] = {
    "gateway": "geostream_gateway",
    "sink": "geostream_sink",
    "api": API_ROLE,
}
ANALYST_GROUP = "geostream_analyst"
_ORG_PATTERN = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class IsolationError(ValueError):
    """A bad org id or role request, with a message for the operator."""


def check_org(org_id: str) -> str:
    """``org_id`` if it is a valid org identifier (the records' Identifier pattern)."""
    if not _ORG_PATTERN.match(org_id):
        raise IsolationError(f"invalid org id {org_id!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -")
    return org_id


def url_for_role(owner_url: str, role: str, password: str) -> str:
    """The owner's URL (same host, port and database) with another role's credentials."""
    params = conninfo_to_dict(owner_url)
    host = params.get("host") or "127.0.0.1"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or role
    return f"postgresql://{quote(role)}:{quote(password)}@{host}:{port}/{quote(str(dbname))}"


def role_password(settings: Settings, service: Service) -> str:
    """A service role's password: its setting (``GEOSTREAM_DB_<SERVICE>_PASSWORD``), or the
    local stack's credentials file, which holds a random one per role. Never derived from
    another role's password."""
    configured: str = getattr(settings, f"db_{service}_password")
    if configured:
        return configured
    from geostream.stack import Stack

    postgres = Stack(settings).postgres
    if postgres.credentials_file.exists():
        return postgres.service_password(SERVICE_ROLES[service])
    raise IsolationError(
        f"set GEOSTREAM_DB_{service.upper()}_PASSWORD: the {service} logs in as"
        f" {SERVICE_ROLES[service]}, and there is no local stack to keep its password"
    )


def service_database_url(settings: Settings, service: Service) -> str:
    """The URL a service connects with: the database's host, port and name, its own role."""
    role = SERVICE_ROLES[service]
    return url_for_role(database_url(settings), role, role_password(settings, service))


def enable_service_logins(settings: Settings, owner_url: str | None = None) -> list[str]:
    """Give each service role its login and password (as the owner; idempotent). Services
    whose password is neither configured nor kept by a local stack are left without login."""
    enabled = []
    with psycopg.connect(owner_url or database_url(settings), autocommit=True) as conn:
        for service, role in SERVICE_ROLES.items():
            try:
                password = role_password(settings, service)
            except IsolationError:
                continue
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            enabled.append(role)
    return enabled


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
