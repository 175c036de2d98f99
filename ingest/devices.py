"""Device administration with the one pool factory: issue and revoke tokens."""

from __future__ import annotations

from config.settings import Settings
from geostream.db import create_pool
from ingest.tokens import TokenStore


async def create_device(
    settings: Settings, org_id: str, courier_id: str, device_id: str, *, rotate: bool = False
) -> str:
    """Issue a token for the device; returns the token (kept nowhere but in the output)."""
    pool = create_pool(settings)
    await pool.open()
    try:
        return await TokenStore(pool).create(org_id, courier_id, device_id, rotate=rotate)
    finally:
        await pool.close()


async def revoke_devices(
    settings: Settings,
    org_id: str,
    *,
    device_id: str | None = None,
    courier_id: str | None = None,
    token: str | None = None,
) -> int:
    """Revoke live tokens (of a device, a courier, or one token); returns how many."""
    pool = create_pool(settings)
    await pool.open()
    try:
        return await TokenStore(pool).revoke(
            org_id, device_id=device_id, courier_id=courier_id, token=token
        )
    finally:
        await pool.close()
