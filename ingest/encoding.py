"""Accepted fixes as :class:`schemas.records.IngestedFix` JSON, without a dataclass per fix.

Building a frozen dataclass per fix and letting orjson serialise it costs more than the rest of
the gateway's per-fix work, so a request's identity part (schema version, org, courier, device,
``received_at``) is serialised once and spliced onto each fix's own JSON object. The result is
the same JSON object :func:`schemas.wire.encode` would write (a test decodes and compares).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from ingest.tokens import DeviceIdentity
from schemas.records import SCHEMA_VERSION


def identity_suffix(identity: DeviceIdentity, received_at: datetime) -> bytes:
    """``,"schema_version":1,...}``: the part every fix of one request shares."""
    common = orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "org_id": identity.org_id,
            "courier_id": identity.courier_id,
            "device_id": identity.device_id,
            "received_at": received_at,
        }
    )
    return b"," + common[1:]


def encode_ingested(
    fixes: Iterable[dict[str, Any]], identity: DeviceIdentity, received_at: datetime
) -> list[bytes]:
    """Each clean fix (from :func:`ingest.validation.validate_fix`) as an IngestedFix value.

    Clean fixes never contain the identity keys (validation keeps only Fix fields), so the
    spliced object has no duplicate keys.
    """
    suffix = identity_suffix(identity, received_at)
    dumps = orjson.dumps
    return [dumps(fix)[:-1] + suffix for fix in fixes]
