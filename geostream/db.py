"""PostgreSQL at the edges: the database URL, each service's login, and the one pool."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from config.settings import Settings

Service = Literal["gateway", "sink", "api"]
#: The login role of each service (migrations 0004 and 0014).
SERVICE_ROLES: dict[Service, str] = {
    "gateway": "geostream_gateway",
    "sink": "geostream_sink",
    "api": "geostream_api",
}


class MissingPassword(ValueError):
    """A service role whose password is neither configured nor kept by a local stack."""


def database_url(settings: Settings) -> str:
    """The configured URL, or the local stack's owner URL when none is configured."""
    if settings.database_url:
        return settings.database_url
    from geostream.stack import Stack

    return Stack(settings).postgres.url()


def create_pool(settings: Settings, url: str | None = None) -> AsyncConnectionPool:
    """The one pool configuration; callers open it (``await pool.open()``) and close it."""
    return AsyncConnectionPool(
        url or database_url(settings),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        open=False,
        kwargs={"application_name": "geostream"},
    )


def redact(url: str) -> str:
    """The URL with its password replaced, for printing."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


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
    raise MissingPassword(
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
            except MissingPassword:
                continue
            conn.execute(
                sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            enabled.append(role)
    return enabled
