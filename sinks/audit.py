"""The access audit (privacy policy 6.1): who read a courier's personal data, what and when.

The API records every read of one courier's data (track, trips, stops, export) and every live
stream it opens (for the whole org: ``courier_id`` is NULL), in the transaction of the read.
The records are part of the courier's export ("who looked at my location") and operators read
them at ``GET /v1/audit?courier=`` or with ``geostream admin audit``. Table: migration 0013;
retention class :data:`AUDIT_CLASS`.
"""

from __future__ import annotations

from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from config.retention import RetentionPolicy

AUDIT_CLASS = "access_audit"
Action = Literal["track", "trips", "stops", "export", "live"]

_READ = """
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'at', a.at, 'accessor', a.accessor, 'action', a.action, 'detail', a.detail,
           'scope', CASE WHEN a.courier_id IS NULL THEN 'org' ELSE 'courier' END)
         ORDER BY a.at DESC, a.audit_id DESC), '[]'::jsonb)
FROM (SELECT * FROM access_audit
      WHERE org_id = %(org)s AND (courier_id = %(courier)s OR courier_id IS NULL)
      ORDER BY at DESC, audit_id DESC LIMIT %(limit)s) AS a"""


async def record(
    conn: AsyncConnection[Any],
    policy: RetentionPolicy,
    org_id: str,
    courier_id: str | None,
    accessor: str,
    action: Action,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit record, in the caller's transaction (the API's: its org must be ``org_id``)."""
    await conn.execute(
        "INSERT INTO access_audit (org_id, courier_id, accessor, action, detail, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, now() + %s)",
        (org_id, courier_id, accessor, action, Jsonb(detail or {}),
         policy.period(AUDIT_CLASS, org_id)),
    )  # fmt: skip


async def read(
    conn: AsyncConnection[Any], org_id: str, courier_id: str, limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` reads of the courier's data, the org's live streams included."""
    cursor = await conn.execute(_READ, {"org": org_id, "courier": courier_id, "limit": limit})
    row = await cursor.fetchone()
    return list(row[0]) if row else []
