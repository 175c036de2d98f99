"""The wire contract: one definition per record, orjson on the wire, JSON Schema in sync."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.jsonschema import JSON_DIR, expected_files, stale_files
from schemas.records import RECORDS, SCHEMA_VERSION, Fix, IngestedFix
from schemas.wire import WireError, decode, decode_many, encode, encode_array, validate

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_checked_in_json_schemas_match_the_definitions() -> None:
    stale = stale_files()
    assert stale == [], "run `geostream schemas export`; stale: " + ", ".join(map(str, stale))


def test_every_record_has_a_schema_file_and_all_but_fix_carry_the_version() -> None:
    names = {path.name for path in expected_files()}
    assert names == {f"{r.__name__}.v{SCHEMA_VERSION}.json" for r in RECORDS}
    for record in RECORDS:
        schema = orjson.loads((JSON_DIR / f"{record.__name__}.v1.json").read_bytes())
        fields = {f.name for f in dataclasses.fields(record)}
        assert set(schema["properties"]) == fields
        if record is not Fix:
            assert schema["properties"]["schema_version"]["const"] == 1


def test_drift_is_detected(tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("json")
    for path, body in expected_files().items():
        (directory / path.name).write_bytes(body)
    assert stale_files(directory) == []
    edited = directory / "Fix.v1.json"
    edited.write_bytes(edited.read_bytes().replace(b'"lat"', b'"latitude"'))
    (directory / "Old.v0.json").write_text("{}")
    assert stale_files(directory) == sorted([edited, directory / "Old.v0.json"])


finite_lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
finite_lon = st.floats(min_value=-180, max_value=180, allow_nan=False)


@given(
    lat=finite_lat,
    lon=finite_lon,
    fix_id=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=64),
)
def test_ingested_fix_round_trips(lat: float, lon: float, fix_id: str) -> None:
    fix = IngestedFix(
        fix_id=fix_id, ts=NOW, lat=lat, lon=lon, org_id="acme", courier_id="c-1",
        device_id="d-1", received_at=NOW,
    )  # fmt: skip
    assert decode(IngestedFix, encode(fix)) == fix


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lat": 91.0}, "invalid_less_than_equal"),
        ({"lon": -181.0}, "invalid_greater_than_equal"),
        ({"fix_id": "x" * 65}, "invalid_string_too_long"),
        ({"ts": "2026-11-24T12:00:00"}, "invalid_timezone_aware"),
        ({"provider": "carrier-pigeon"}, "invalid_literal_error"),
    ],
)
def test_invalid_fixes_get_a_reason(change: dict[str, object], reason: str) -> None:
    raw = {"fix_id": "a", "ts": "2026-11-24T12:00:00+05:00", "lat": 43.2, "lon": 76.9, **change}
    with pytest.raises(WireError) as caught:
        validate(Fix, raw)
    assert caught.value.reason == reason


def test_nan_is_refused_and_malformed_json_has_its_reason() -> None:
    with pytest.raises(WireError):
        validate(Fix, {"fix_id": "a", "ts": NOW.isoformat(), "lat": math.nan, "lon": 1.0})
    with pytest.raises(WireError) as caught:
        decode(Fix, b"{not json")
    assert caught.value.reason == "malformed_json"


def test_epoch_milliseconds_are_a_timestamp() -> None:
    fix = validate(Fix, {"fix_id": "a", "ts": 1_795_000_000_000, "lat": 0.5, "lon": 0.5})
    assert fix.ts == datetime.fromtimestamp(1_795_000_000, UTC)


def _ingested(fix_id: str, lat: float = 43.2) -> IngestedFix:
    return IngestedFix(
        fix_id=fix_id, ts=NOW, lat=lat, lon=76.9, org_id="acme", courier_id="c-1",
        device_id="d-1", received_at=NOW,
    )  # fmt: skip


def test_an_array_of_records_decodes_each_and_names_the_bad_ones() -> None:
    good = [_ingested("a"), _ingested("b")]
    assert decode_many(IngestedFix, encode_array([encode(f) for f in good])) == good
    assert decode_many(IngestedFix, encode(good[0])) == [good[0]]
    bad = encode(_ingested("c")).replace(b'"lat":43.2', b'"lat":91.0')
    mixed = decode_many(IngestedFix, encode_array([encode(good[0]), bad, encode(good[1])]))
    assert mixed[0] == good[0]
    assert mixed[2] == good[1]
    assert isinstance(mixed[1], WireError)
    assert mixed[1].reason == "invalid_less_than_equal"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"[{", "malformed_json"), (b"42", "invalid_type"), (b'"x"', "invalid_type")],
)
def test_a_value_that_is_neither_object_nor_array_is_refused_whole(
    data: bytes, reason: str
) -> None:
    with pytest.raises(WireError) as caught:
        decode_many(IngestedFix, data)
    assert caught.value.reason == reason
