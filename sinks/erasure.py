"""A courier's erasure across the whole pipeline (privacy policy 5.1, 9.7).

One request, from ``DELETE /v1/couriers/{id}/data`` or ``geostream admin delete-courier``:

1. **The database** (:func:`erase_in_database`, migration 0012): in one transaction the request
   is recorded, the courier's device tokens are revoked and every row of the courier is
   deleted. From then on the sink drops the courier's records (they can only be from before).
2. **Kafka** (:func:`publish`): the request goes to ``privacy.requests``, where the gateways
   read it and forget the courier's cached tokens, and into the courier's own ``fixes.raw``
   partition (marked by the header of :mod:`processors.erasure`), in order with its fixes.
   There the worker drops the courier's state (a tombstone on its changelog), discards fixes
   received before the request and writes tombstones on ``courier.latest`` and on each topic
   the sink reads; a tombstone tells the sink that nothing older of the courier follows on
   that topic.
3. **The receipt** (:func:`receipt`): rows per table, tokens revoked, tombstones, and when
   the copies left in Kafka's logs expire. It names no courier and is kept for the operator.

Everything but the two I/O functions is pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from config.retention import RetentionPolicy
from config.settings import Settings
from config.topics import MAX_COMPACTION_LAG, TopicSpec
from geostream.kafka import topic_name, topic_specs
from processors.erasure import HEADER_NAME, HEADER_VALUE, TOMBSTONED_TOPICS
from schemas.records import PrivacyRequest
from schemas.wire import encode, record_key

#: How long a receipt is kept (retention class in ``config/retention.yaml``).
RECEIPT_CLASS = "privacy_receipts"


@dataclass(frozen=True, slots=True)
class Erased:
    """What the database part did."""

    request_id: str
    org_id: str
    courier_id: str
    requested_by: str
    requested_at: datetime
    deleted: dict[str, int]
    devices: tuple[str, ...]


def log_retention(spec: TopicSpec) -> timedelta:
    """How long ``spec``'s log keeps a record (compacted topics: a superseded one)."""
    if spec.compact:
        return MAX_COMPACTION_LAG
    return spec.retention or spec.class_period


def forget_after(specs: dict[str, TopicSpec]) -> timedelta:
    """How long the request must remember the courier: until every log copy has expired."""
    return max(log_retention(spec) for spec in specs.values())


async def erase_in_database(
    conn: AsyncConnection[Any],
    settings: Settings,
    policy: RetentionPolicy,
    org_id: str,
    courier_id: str,
    requested_by: str,
    *,
    as_api: bool,
) -> Erased:
    """Record the request, revoke the tokens, delete the rows: one transaction.

    ``as_api``: the connection is the API role's inside an org transaction, which may erase
    only in the org it set; otherwise it is the owner's.
    """
    forget = forget_after(topic_specs(settings))
    keep = policy.period(RECEIPT_CLASS, org_id)
    if as_api:
        cursor = await conn.execute(
            "SELECT * FROM api_erase_courier(%s, %s, %s, %s)",
            (courier_id, requested_by, forget, keep),
        )
    else:
        async with conn.transaction():
            cursor = await conn.execute(
                "SELECT * FROM erase_courier(%s, %s, %s, %s, %s)",
                (org_id, courier_id, requested_by, forget, keep),
            )
    row = await cursor.fetchone()
    assert row is not None  # the function returns one row or raises
    request_id, requested_at, deleted, devices = row
    return Erased(
        str(request_id), org_id, courier_id, requested_by, requested_at, deleted, tuple(devices)
    )


def request_record(erased: Erased) -> PrivacyRequest:
    return PrivacyRequest(
        request_id=erased.request_id,
        org_id=erased.org_id,
        courier_id=erased.courier_id,
        kind="delete",
        requested_at=erased.requested_at,
        requested_by=erased.requested_by,
    )


async def publish(producer: AIOKafkaProducer, settings: Settings, erased: Erased) -> None:
    """Put the request on ``privacy.requests`` and in the courier's ``fixes.raw`` partition;
    returns once Kafka has acknowledged both. Raises KafkaError."""
    key = record_key(erased.org_id, erased.courier_id)
    value = encode(request_record(erased))
    header = [(HEADER_NAME, HEADER_VALUE)]
    sent = [
        await producer.send(topic_name(settings, "privacy.requests"), value, key=key),
        await producer.send(topic_name(settings, "fixes.raw"), value, key=key, headers=header),
    ]
    for delivery in sent:
        await delivery


def receipt(erased: Erased, specs: dict[str, TopicSpec]) -> dict[str, Any]:
    """The erasure's receipt: what went where, and when the last copies expire. No courier id,
    no device id: it is kept after the courier is forgotten."""
    at = erased.requested_at
    return {
        "request_id": erased.request_id,
        "org_id": erased.org_id,
        "kind": "delete",
        "requested_by": erased.requested_by,
        "requested_at": at.isoformat(),
        "rows_deleted": dict(erased.deleted),
        "device_tokens_revoked": len(erased.devices),
        "tombstones": {
            "courier.latest": "written by the worker when it reaches the request",
            "worker state changelog": "written by the worker when it reaches the request",
            **{
                name: "written by the worker; the sink drops older records"
                for name in TOMBSTONED_TOPICS
            },
        },
        "log_copies_expire": {
            name: (at + log_retention(spec)).isoformat() for name, spec in sorted(specs.items())
        },
        "courier_forgotten_at": (at + forget_after(specs)).isoformat(),
    }


async def store_receipt(
    conn: AsyncConnection[Any], request_id: str, document: dict[str, Any], *, as_api: bool
) -> None:
    if as_api:
        await conn.execute("SELECT api_store_receipt(%s, %s)", (request_id, Jsonb(document)))
    else:
        await conn.execute(
            "UPDATE privacy_requests SET receipt = %s WHERE request_id = %s",
            (Jsonb(document), request_id),
        )


# -- the sink's part ----------------------------------------------------------------------------

Courier = tuple[str, str]  # (org_id, courier_id), as schemas.wire.courier_of_key gives it


def drop_erased(
    rows: list[Any],
    courier_of_row: Any,
    pending: set[Courier],
    tombstoned: set[Courier],
) -> list[Any]:
    """The rows the sink may write of one topic's batch.

    ``pending``: couriers with an erasure whose tombstone the sink has not passed on this
    topic; ``tombstoned``: couriers whose tombstone is in this batch (their rows before it
    are already gone from ``rows``; those after it are from after the erasure).
    """
    drop = pending - tombstoned
    if not drop:
        return rows
    return [row for row in rows if courier_of_row(row) not in drop]


async def pending_erasures(
    conn: AsyncConnection[Any], topics: list[str]
) -> dict[str, set[Courier]]:
    """Per logical topic, the couriers whose tombstone the sink has not passed there yet.

    ``sink_pending_erasures`` (migration 0014) takes SHARE on ``privacy_requests`` for the
    caller's transaction: an erasure recorded meanwhile waits for that transaction to commit,
    so its deletes see what it wrote, and a later transaction sees the request.
    """
    cursor = await conn.execute("SELECT * FROM sink_pending_erasures(%s)", (topics,))
    pending: dict[str, set[Courier]] = {}
    for topic, org_id, courier_id in await cursor.fetchall():
        pending.setdefault(topic, set()).add((org_id, courier_id))
    return pending


async def mark_passed(conn: AsyncConnection[Any], topic: str, couriers: set[Courier]) -> None:
    """Record that the sink passed these couriers' tombstones on ``topic``."""
    for org_id, courier_id in couriers:
        await conn.execute("SELECT sink_mark_passed(%s, %s, %s)", (topic, org_id, courier_id))
