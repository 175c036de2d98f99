"""Pure per-fix validation: reasons, the one definition of the fields, and pydantic agreement."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.encoding import encode_ingested
from ingest.tokens import DeviceIdentity
from ingest.validation import (
    FIELD_NAMES,
    SPECS,
    TimeLimits,
    parse_ts,
    validate_batch,
    validate_fix,
)
from schemas.records import Fix, IngestedFix
from schemas.wire import WireError, decode, validate

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NOW_S = NOW.timestamp()
LIMITS = TimeLimits(future_tolerance_s=300.0, max_age_s=48 * 3600.0)


def good(**overrides: Any) -> dict[str, Any]:
    fix: dict[str, Any] = {
        "fix_id": "f-1",
        "ts": (NOW - timedelta(seconds=10)).isoformat(),
        "lat": 43.25,
        "lon": 76.95,
    }
    fix.update(overrides)
    return fix


def reason(raw: object) -> str | None:
    clean, problem = validate_fix(raw, NOW_S, LIMITS)
    assert (clean is None) != (problem is None)
    return problem.reason if problem else None


def test_fields_come_from_the_fix_record() -> None:
    assert [s.name for s in SPECS] == [f.name for f in dataclasses.fields(Fix)]
    assert {f.name for f in dataclasses.fields(Fix)} == FIELD_NAMES
    required = {s.name for s in SPECS if s.required}
    assert required == {"fix_id", "ts", "lat", "lon"}
    lat = next(s for s in SPECS if s.name == "lat")
    assert (lat.ge, lat.le) == (-90.0, 90.0)
    provider = next(s for s in SPECS if s.name == "provider")
    assert provider.choices == {"gps", "network", "fused"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, None),
        ({"lat": 90, "lon": -180}, None),
        ({"lat": 90.0001}, "lat_out_of_range"),
        ({"lat": -91}, "lat_out_of_range"),
        ({"lon": 180.5}, "lon_out_of_range"),
        ({"lat": math.nan}, "not_finite"),
        ({"lon": -math.inf}, "not_finite"),
        ({"altitude_m": math.inf}, "not_finite"),
        ({"lat": "43.2"}, "invalid_type"),
        ({"lat": True}, "invalid_type"),
        ({"lat": None}, "invalid_type"),
        ({"lat": 10**400}, "lat_out_of_range"),
        ({"fix_id": 7}, "invalid_type"),
        ({"fix_id": "x" * 64}, None),
        ({"fix_id": "x" * 65}, "fix_id_too_long"),
        ({"fix_id": ""}, "fix_id_empty"),
        ({"accuracy_m": -0.1}, "accuracy_m_out_of_range"),
        ({"accuracy_m": None}, None),
        ({"speed_mps": -1}, "speed_mps_out_of_range"),
        ({"heading_deg": 359.99}, None),
        ({"heading_deg": 360.0}, "heading_deg_out_of_range"),
        ({"battery_pct": 100.5}, "battery_pct_out_of_range"),
        ({"provider": "gps"}, None),
        ({"provider": "GPS"}, "invalid_provider"),
        ({"is_mock": 1}, "invalid_type"),
        ({"is_mock": False}, None),
        ({"ts": "2026-11-24T11:59:00Z"}, None),
        ({"ts": "2026-11-24t11:59:00.123456789z"}, None),
        ({"ts": "2026-11-24T17:29:00+05:30"}, None),
        ({"ts": "2026-11-24T11:59:00"}, "invalid_ts"),
        ({"ts": "2026-11-24"}, "invalid_ts"),
        ({"ts": "2026-02-30T10:00:00Z"}, "invalid_ts"),
        ({"ts": "soon"}, "invalid_ts"),
        ({"ts": [1]}, "invalid_type"),
        ({"ts": True}, "invalid_type"),
        ({"ts": int(NOW_S * 1000)}, None),
        ({"ts": NOW_S * 1000 + 299_000.5}, None),
        ({"ts": int(NOW_S * 1000) + 301_000}, "ts_in_future"),
        ({"ts": "2026-11-24T12:05:01Z"}, "ts_in_future"),
        ({"ts": 10**30}, "ts_in_future"),
        ({"ts": 10**400}, "ts_in_future"),
        ({"ts": -(10**400)}, "ts_too_old"),
        ({"ts": int(NOW_S * 1000) - 48 * 3600 * 1000 - 1}, "ts_too_old"),
        ({"ts": math.nan}, "not_finite"),
    ],
)
def test_reasons(overrides: dict[str, Any], expected: str | None) -> None:
    assert reason(good(**overrides)) == expected


@pytest.mark.parametrize("field", ["fix_id", "ts", "lat", "lon"])
def test_missing_required_field(field: str) -> None:
    fix = good()
    del fix[field]
    clean, problem = validate_fix(fix, NOW_S, LIMITS)
    assert clean is None
    assert problem is not None
    assert (problem.reason, problem.field) == ("missing_field", field)


def test_not_an_object() -> None:
    assert reason(["fix"]) == "invalid_type"
    assert reason(None) == "invalid_type"


def test_clean_fix_keeps_only_schema_fields_and_normalises() -> None:
    clean, _ = validate_fix(
        good(ts="2026-11-24T17:29:00+05:30", accuracy_m=5, org_id="evil", extra=1),
        NOW_S,
        LIMITS,
    )
    assert clean == {
        "fix_id": "f-1",
        "ts": datetime(2026, 11, 24, 11, 59, tzinfo=UTC),
        "lat": 43.25,
        "lon": 76.95,
        "accuracy_m": 5.0,
    }
    assert type(clean["accuracy_m"]) is float


def test_epoch_ms_keeps_millisecond_precision() -> None:
    ms = int(NOW_S * 1000) - 1234
    clean, _ = validate_fix(good(ts=ms), NOW_S, LIMITS)
    assert clean is not None
    assert clean["ts"] == datetime.fromtimestamp(ms // 1000, UTC).replace(
        microsecond=(ms % 1000) * 1000
    )


def test_batch_lists_refusals_by_index_and_counts_unknown_fields() -> None:
    items = [good(fix_id="a", imei="1"), good(fix_id="b", lat=99), "x", good(fix_id="c", imei=2)]
    verdict = validate_batch(items, NOW_S, LIMITS)
    assert [c["fix_id"] for c in verdict.accepted] == ["a", "c"]
    assert [(r.index, r.fix_id, r.reason) for r in verdict.refused] == [
        (1, "b", "lat_out_of_range"),
        (2, None, "invalid_type"),
    ]
    assert verdict.unknown_fields == {"imei": 2}


def test_parse_ts_forms() -> None:
    assert parse_ts("2026-11-24T12:00:00Z")[0] == NOW_S
    assert parse_ts(int(NOW_S * 1000))[0] == NOW_S
    assert parse_ts({})[2] is not None


# Property tests ------------------------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, -90, 90, 90.0000001, -180, 180, 180.0001, 360, 359.999, 100, 100.01]),
)
values = st.one_of(
    numbers, st.text(max_size=70), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)
)
fix_like = st.fixed_dictionaries(
    {},
    optional={
        "fix_id": st.one_of(
            st.text(min_size=0, max_size=70),
            st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
            values,
        ),
        "lat": st.one_of(numbers, values),
        "lon": st.one_of(numbers, values),
        "accuracy_m": st.one_of(numbers, values),
        "speed_mps": numbers,
        "heading_deg": numbers,
        "altitude_m": numbers,
        "provider": st.one_of(st.sampled_from(["gps", "network", "fused", "GPS"]), values),
        "battery_pct": numbers,
        "is_mock": st.one_of(st.booleans(), values),
        "junk": values,
    },
)


# The JSON types the gateway takes per field; pydantic's lax mode also converts "1.5", true, 0.
STRICT_TYPES: dict[str, tuple[type, ...]] = {
    "fix_id": (str,),
    "provider": (str,),
    "is_mock": (bool,),
    **{
        name: (int, float)
        for name in ("lat", "lon", "accuracy_m", "speed_mps", "heading_deg", "altitude_m")
    },
    "battery_pct": (int, float),
}


@settings(max_examples=400, deadline=None)
@given(fix_like)
@example({"is_mock": 0})
@example({"lat": True})
@example({"lat": "1.5"})
@example({"fix_id": 12})
@example({"heading_deg": 359.9999999})
@example({"fix_id": "a\x00b"})  # issue 16, finding 7: PostgreSQL refused it in the sink
@example({"fix_id": "\ud800"})  # ... and this gave a 500
def test_verdict_agrees_with_pydantic_on_the_fix_record(raw: dict[str, Any]) -> None:
    """The fast checker accepts exactly what the record's own pydantic validation accepts
    (strictly typed: no bools as numbers, no numeric strings), apart from ts, set here valid."""
    raw = {"fix_id": "f", "lat": 1.0, "lon": 2.0, **raw, "ts": "2026-11-24T11:59:00Z"}
    assert set(STRICT_TYPES) == FIELD_NAMES - {"ts"}
    clean, problem = validate_fix(raw, NOW_S, LIMITS)
    strict_ok = all(
        type(value) in STRICT_TYPES[name]
        for name, value in raw.items()
        if name in STRICT_TYPES and value is not None
    )
    try:
        record = validate(Fix, {k: v for k, v in raw.items() if k in FIELD_NAMES})
    except WireError:
        assert problem is not None, f"pydantic refused what the gateway took: {raw}"
        return
    if not strict_ok:
        assert problem is not None
        assert problem.reason == "invalid_type"
        return
    assert problem is None, f"gateway refused {raw}: {problem}"
    assert clean is not None
    for name, value in clean.items():
        assert getattr(record, name) == value


@settings(max_examples=200, deadline=None)
@given(
    offset_s=st.floats(min_value=-200_000, max_value=200_000, allow_nan=False),
    as_ms=st.booleans(),
)
def test_time_window(offset_s: float, as_ms: bool) -> None:
    when = NOW_S + offset_s
    ts: object = round(when * 1000) if as_ms else datetime.fromtimestamp(when, UTC).isoformat()
    got = reason(good(ts=ts))
    if offset_s > 300.001:
        assert got == "ts_in_future"
    elif offset_s < -48 * 3600 - 0.001:
        assert got == "ts_too_old"
    elif -48 * 3600 + 0.001 < offset_s < 299.999:
        assert got is None


@settings(max_examples=100, deadline=None)
@given(
    lat=st.floats(min_value=-90, max_value=90),
    lon=st.floats(min_value=-180, max_value=180),
    accuracy=st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
    ms=st.integers(min_value=int(NOW_S * 1000) - 3_600_000, max_value=int(NOW_S * 1000)),
)
def test_encoded_records_decode_as_ingested_fix(
    lat: float, lon: float, accuracy: float | None, ms: int
) -> None:
    raw = {"fix_id": "z", "ts": ms, "lat": lat, "lon": lon, "accuracy_m": accuracy}
    clean, problem = validate_fix(raw, NOW_S, LIMITS)
    assert problem is None
    assert clean is not None
    identity = DeviceIdentity("acme", "c-1", "d-1")
    [value] = encode_ingested([clean], identity, NOW)
    decoded = decode(IngestedFix, value)
    assert decoded == IngestedFix(
        **clean, org_id="acme", courier_id="c-1", device_id="d-1", received_at=NOW
    )
    assert set(orjson.loads(value)) <= {f.name for f in dataclasses.fields(IngestedFix)}
