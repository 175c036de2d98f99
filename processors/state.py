"""Compact, lossless serialisation of :class:`~processors.pipeline.CourierState`.

The state goes into the worker's table (and its changelog topic) after every fix, so it must be
small and fast: a version byte, a little orjson header for the scalars, and packed binary arrays
for the parts that grow (dedupe memory, stop window, trip path). Floats are stored as doubles so
a state that went through bytes and back gives exactly the same outputs as one that did not
(the property tests check this). Budget: under 2 KB per courier (see docs/benchmarks.md).
"""

from __future__ import annotations

import struct
import sys
from array import array
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import chain

import orjson

from processors.cleaning import CleanState, ts_ms
from processors.pipeline import CourierState
from processors.segmenter import OpenTrip, SegState, WPoint
from processors.zones import ZoneState
from schemas.records import IngestedFix

VERSION = 2
#: Versions :func:`loads` reads: 1 had no source position (a state from it has none yet).
READABLE = (1, 2)
_HEAD = struct.Struct("<BHHHH")
_RECENT = struct.Struct("<Qq")
_WPOINT = struct.Struct("<qdddIIdd")
_PATH = struct.Struct("<iii")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class StateError(ValueError):
    """Bytes that are not a courier state of a known version."""


@lru_cache(maxsize=256)
def _packer(code: str, count: int) -> struct.Struct:
    """``count`` repetitions of ``code``: one ``pack`` call per array instead of one per item
    (byte for byte the same as joining ``Struct("<" + code).pack`` of each item)."""
    return struct.Struct("<" + code * count)


def _little_endian(values: array[int]) -> bytes:
    """An int array as little-endian bytes (the "<q" / "<i" items of the format)."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _from_little_endian(typecode: str, data: bytes, item: struct.Struct, what: str) -> array[int]:
    """The inverse of :func:`_little_endian`; ``item`` is one record of the format."""
    if len(data) % item.size:
        raise StateError(f"truncated state: {what}")
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


if array("q").itemsize != 8 or array("i").itemsize != 4:  # pragma: no cover
    raise ImportError("the state codec needs 8-byte 'q' and 4-byte 'i' arrays")


def _us(ts: datetime) -> int:
    return (ts - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _fix_row(fix: IngestedFix) -> list[object]:
    return [
        fix.fix_id,
        _us(fix.ts),
        fix.lat,
        fix.lon,
        fix.accuracy_m,
        fix.speed_mps,
        fix.heading_deg,
        fix.altitude_m,
        fix.provider,
        fix.battery_pct,
        fix.is_mock,
        fix.device_id,
        _us(fix.received_at),
    ]


def _fix_from_row(row: list[object], org_id: str, courier_id: str) -> IngestedFix:
    (fix_id, ts, lat, lon, acc, speed, heading, alt, provider, battery, mock, device, rec) = row
    return IngestedFix(
        fix_id=str(fix_id),
        ts=_from_us(int(ts)),  # type: ignore[call-overload]
        lat=float(lat),  # type: ignore[arg-type]
        lon=float(lon),  # type: ignore[arg-type]
        accuracy_m=acc,  # type: ignore[arg-type]
        speed_mps=speed,  # type: ignore[arg-type]
        heading_deg=heading,  # type: ignore[arg-type]
        altitude_m=alt,  # type: ignore[arg-type]
        provider=provider,  # type: ignore[arg-type]
        battery_pct=battery,  # type: ignore[arg-type]
        is_mock=mock,  # type: ignore[arg-type]
        org_id=org_id,
        courier_id=courier_id,
        device_id=str(device),
        received_at=_from_us(int(rec)),  # type: ignore[call-overload]
    )


def dumps(st: CourierState) -> bytes:
    """The state as bytes (lossless)."""
    c, seg, trip = st.clean, st.seg, st.seg.trip
    trip_head = None
    if trip is not None:
        trip_head = [
            trip.trip_id,
            trip.start_ms,
            trip.lat,
            trip.lon,
            trip.cum_m,
            trip.k,
            trip.start_stop_id,
            trip.max_speed,
            trip.announced,
        ]
    head = orjson.dumps(
        [
            st.org_id,
            st.courier_id,
            [c.last_ms, c.last_lat, c.last_lon, c.jumps],
            [_fix_row(f) for f in st.buffer],
            st.newest_ms,
            st.released_ms,
            st.last_received_ms,
            st.anchor,
            st.odo_day,
            st.odo_m,
            [st.zones.inside, st.zones.pending],
            [
                seg.stopped,
                seg.breaker,
                seg.stop_start_ms,
                seg.stop_id,
                seg.last_stop_id,
                seg.cum_m,
                seg.k,
            ],
            trip_head,
            [st.source_partition, st.source_offset],
        ]
    )
    path = trip.path if trip is not None else array("i")
    window = seg.window
    return b"".join(
        (
            _HEAD.pack(VERSION, len(head), len(c.recent_flat) // 2, len(window), len(path) // 3),
            head,
            # "<Qq" pairs: the hashes are 48-bit, so their int64 bytes are the same
            _little_endian(c.recent_flat),
            _packer("qdddIIdd", len(window)).pack(*chain.from_iterable(window)),
            _little_endian(path),  # "<iii" points
        )
    )


def loads(data: bytes) -> CourierState:
    """Bytes from :func:`dumps` back into a state."""
    try:
        version, n_head, n_recent, n_window, n_path = _HEAD.unpack_from(data, 0)
    except struct.error as exc:
        raise StateError(f"truncated state: {exc}") from exc
    if version not in READABLE:
        raise StateError(f"unknown state version {version}")
    offset = _HEAD.size
    try:
        head = orjson.loads(data[offset : offset + n_head])
    except orjson.JSONDecodeError as exc:
        raise StateError(f"bad state header: {exc}") from exc
    offset += n_head
    recent = _from_little_endian(
        "q", data[offset : offset + n_recent * _RECENT.size], _RECENT, "dedupe memory"
    )
    offset += n_recent * _RECENT.size
    window = [
        WPoint(*x) for x in _WPOINT.iter_unpack(data[offset : offset + n_window * _WPOINT.size])
    ]
    offset += n_window * _WPOINT.size
    path = _from_little_endian("i", data[offset : offset + n_path * _PATH.size], _PATH, "path")
    (
        org_id,
        courier_id,
        clean,
        buffer,
        newest_ms,
        released_ms,
        last_received_ms,
        anchor,
        odo_day,
        odo_m,
        zones,
        seg_head,
        trip_head,
        *rest,
    ) = head
    source_partition, source_offset = rest[0] if rest else (-1, -1)
    trip = None
    if trip_head is not None:
        trip = OpenTrip(
            trip_id=trip_head[0],
            start_ms=trip_head[1],
            lat=trip_head[2],
            lon=trip_head[3],
            cum_m=trip_head[4],
            k=trip_head[5],
            start_stop_id=trip_head[6],
            max_speed=trip_head[7],
            announced=trip_head[8],
            path=path,
        )
    fixes = [_fix_from_row(row, org_id, courier_id) for row in buffer]
    return CourierState(
        org_id=org_id,
        courier_id=courier_id,
        clean=CleanState(
            recent_flat=recent,
            last_ms=clean[0],
            last_lat=clean[1],
            last_lon=clean[2],
            jumps=[tuple(j) for j in clean[3]],
        ),
        buffer=fixes,
        buffer_ms=[ts_ms(f) for f in fixes],
        newest_ms=newest_ms,
        released_ms=released_ms,
        last_received_ms=last_received_ms,
        anchor=tuple(anchor) if anchor is not None else None,
        odo_day=odo_day,
        odo_m=odo_m,
        zones=ZoneState(inside=zones[0], pending=zones[1]),
        seg=SegState(
            window=window,
            stopped=seg_head[0],
            breaker=seg_head[1],
            stop_start_ms=seg_head[2],
            stop_id=seg_head[3],
            last_stop_id=seg_head[4],
            cum_m=seg_head[5],
            k=seg_head[6],
            trip=trip,
        ),
        source_partition=source_partition,
        source_offset=source_offset,
    )
