"""PostgreSQL at the edges: the database URL and the one connection pool."""

from __future__ import annotations

import re

from psycopg_pool import AsyncConnectionPool

from config.settings import Settings


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
