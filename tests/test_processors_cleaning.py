"""Every cleaning filter and its reason code (pure, no I/O)."""

from __future__ import annotations

import hashlib
import math
from array import array
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from processors_helpers import fix, processor, run
from pydantic import TypeAdapter

from processors._cleaning import epoch_ms, fix_hash, recent_match
from processors.cleaning import REASONS
from processors.pipeline import CourierProcessor


def reasons(out):
    return [r.reason for r in out.rejected]


@pytest.mark.parametrize(
    ("lat", "lon", "reason"),
    [
        (math.nan, 4.8, "invalid_coordinates"),
        (45.0, math.inf, "invalid_coordinates"),
        (91.0, 4.8, "lat_out_of_range"),
        (45.0, -180.5, "lon_out_of_range"),
        (0.0, 0.0, "null_island"),
    ],
)
def test_coordinates(lat, lon, reason):
    proc = processor()
    _, out = run(proc, [fix(0, lat=lat, lon=lon)])
    assert reasons(out) == [reason]
    assert out.clean == []
    rejection = out.rejected[0]
    assert rejection.stage == "processor"
    assert rejection.retention_class == "technical"
    assert rejection.record is not None
    assert rejection.record["fix_id"] == "c1-0"


def test_timestamps_against_received_at():
    proc = processor()
    _, out = run(
        proc,
        [
            fix(0, received_delay_s=-121),  # ts 121 s after the gateway got it
            fix(1, received_delay_s=-119),
            fix(2, received_delay_s=172_801),
            fix(3, received_delay_s=172_000),
        ],
    )
    assert reasons(out) == ["ts_in_future", "ts_too_old"]
    assert [f.fix_id for f in out.clean] == ["c1-1", "c1-3"]


def test_accuracy_threshold_and_org_override():
    proc = processor()
    _, out = run(proc, [fix(0, accuracy_m=150.0), fix(1, accuracy_m=99.0), fix(2, accuracy_m=None)])
    assert reasons(out) == ["low_accuracy"]
    strict = replace(
        proc.config, org_cleaning={"acme": replace(proc.config.cleaning, max_accuracy_m=50.0)}
    )
    _, out = run(CourierProcessor(strict), [fix(0, accuracy_m=60.0)])
    assert reasons(out) == ["low_accuracy"]
    _, out = run(CourierProcessor(strict), [fix(0, accuracy_m=60.0, org="other")])
    assert reasons(out) == []


def test_org_overrides_from_settings():
    from config.settings import get_settings
    from processors.config import ProcessorConfig

    settings = get_settings().model_copy(
        update={"clean_org_overrides": {"acme": {"max_speed_mps": 20, "jump_recovery_fixes": 3}}}
    )
    config = ProcessorConfig.from_settings(settings)
    assert config.rules_for("acme").max_speed_mps == 20.0
    assert config.rules_for("acme").jump_recovery_fixes == 3
    assert config.rules_for("other").max_speed_mps == settings.clean_max_speed_mps
    bad = get_settings().model_copy(update={"clean_org_overrides": {"acme": {"nope": 1}}})
    with pytest.raises(ValueError, match="unknown cleaning overrides"):
        ProcessorConfig.from_settings(bad)


def test_duplicates_by_fix_id_and_by_ts():
    proc = processor()
    _, out = run(
        proc,
        [
            fix(0, fix_id="a"),
            fix(10, 10, fix_id="b"),
            fix(10, 20, fix_id="b"),  # same id again
            fix(10, 30, fix_id="c"),  # same ts, other id
            fix(20, 40, fix_id="d"),
        ],
    )
    assert reasons(out) == ["duplicate_fix_id", "duplicate_ts"]
    assert [f.fix_id for f in out.clean] == ["a", "b", "d"]


def test_dedupe_memory_is_bounded():
    proc = processor(reorder_window_s=0.0)
    st, _ = run(proc, [fix(i * 10, i * 20) for i in range(100)])
    assert len(st.clean.recent) == proc.config.cleaning.dedupe_memory


def test_min_period():
    proc = processor()
    _, out = run(proc, [fix(0), fix(0.5, 1), fix(1.5, 2)])
    assert reasons(out) == ["min_period"]


def test_implausible_jump_then_recovery():
    proc = processor()  # 60 m/s max, recovery after 2 agreeing jumps
    far = 50_000.0  # 50 km away
    _, out = run(
        proc,
        [
            fix(0),
            fix(10, 10),
            fix(20, far),  # 5 km/s: rejected
            fix(30, 20),  # back home: fine, jump forgotten
            fix(40, far),  # rejected
            fix(50, far + 30),  # agrees with the previous jump: still rejected (2nd)
            fix(60, far + 60),  # 3rd agreeing: the courier really is there
            fix(70, far + 90),
        ],
    )
    assert reasons(out) == ["implausible_jump"] * 3
    assert [f.fix_id for f in out.clean] == ["c1-0", "c1-10", "c1-30", "c1-60", "c1-70"]


def test_every_reason_code_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "topics.md").read_text()
    for reason in REASONS:
        assert f"`{reason}`" in doc, reason


def _reference_ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


_pydantic_datetime = TypeAdapter(datetime)


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.none() | st.just(UTC) | st.timezones(),
    ),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_epoch_ms_is_the_timestamp_in_ms_rounded(dt: datetime, offset_min: int) -> None:
    """Any aware datetime (UTC, fixed offsets, zones, pydantic's own tzinfo) and naive ones."""
    assert epoch_ms(dt) == _reference_ms(dt)
    fixed = dt.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert epoch_ms(fixed) == _reference_ms(fixed)
    parsed = _pydantic_datetime.validate_python(fixed.isoformat())
    assert type(parsed.tzinfo) is not timezone  # pydantic's TzInfo, the one the wire gives
    assert epoch_ms(parsed) == _reference_ms(parsed)


def test_epoch_ms_rounds_half_to_even_as_round_does() -> None:
    for us in (500, 1500, 2500, -500, -1500, 499, 501):
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        assert epoch_ms(dt) == _reference_ms(dt)
    with pytest.raises(TypeError):
        epoch_ms("2026-03-02T08:00:00Z")  # type: ignore[arg-type]


def _reference_match(flat: array[int], h: int, t_ms: int) -> int:
    hashes, times = list(flat[0::2]), list(flat[1::2])
    at_h = hashes.index(h) if h in hashes else len(hashes)
    at_t = times.index(t_ms) if t_ms in times else len(times)
    if at_h == at_t == len(hashes):
        return 0
    return 1 if at_h <= at_t else 2


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=20),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_recent_match_names_the_oldest_matching_pair(
    pairs: list[tuple[int, int]], h: int, t_ms: int
) -> None:
    flat = array("q", [v for pair in pairs for v in pair])
    assert recent_match(flat, h, t_ms) == _reference_match(flat, h, t_ms)


def test_recent_match_needs_an_int64_array() -> None:
    with pytest.raises(TypeError):
        recent_match(array("i", [1, 2]), 1, 2)
    with pytest.raises(TypeError):
        recent_match([1, 2], 1, 2)  # type: ignore[arg-type]


def _reference_hash(fix_id: str) -> int:
    """What fix_hash was in Python; states remember these hashes, so they must not change."""
    return int.from_bytes(hashlib.blake2b(fix_id.encode(), digest_size=6).digest(), "big")


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=300))
def test_c_fix_hash_is_blake2b(fix_id: str) -> None:
    assert fix_hash(fix_id) == _reference_hash(fix_id)


def test_c_fix_hash_block_edges_and_bad_input() -> None:
    """Empty, and UTF-8 lengths around BLAKE2b's 128-byte blocks."""
    for n in (0, 1, 127, 128, 129, 255, 256, 257):
        assert fix_hash("x" * n) == _reference_hash("x" * n)
        assert 0 <= fix_hash("x" * n) < 2**48
    assert fix_hash("é" * 64) == _reference_hash("é" * 64)  # 128 bytes
    with pytest.raises(TypeError):
        fix_hash(b"abc")  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):
        fix_hash("\ud800")
