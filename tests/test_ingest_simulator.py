"""The courier model: realistic behaviour, checked on hours of simulated time without I/O."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterator

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.simulator import (
    Behaviour,
    Upload,
    _Device,
    _fix_epoch,
    _rfc3339,
    courier_uploads,
    distance_m,
)
from ingest.validation import TimeLimits, validate_fix

START = 1_795_000_000.0
LIMITS = TimeLimits(future_tolerance_s=300.0, max_age_s=48 * 3600.0)


def shift(courier: str, seed: int, hours: float, **kwargs: object) -> list[Upload]:
    uploads: Iterator[Upload] = courier_uploads(
        courier,
        seed=seed,
        start_s=START,
        **kwargs,  # type: ignore[arg-type]
    )
    return list(itertools.takewhile(lambda u: u.at_s < START + hours * 3600, uploads))


def test_deterministic_for_a_seed() -> None:
    assert shift("c1", 7, 1) == shift("c1", 7, 1)
    assert shift("c1", 7, 1) != shift("c1", 8, 1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), interval=st.sampled_from([1.0, 5.0, 15.0]))
def test_every_fix_is_valid_when_uploaded_and_never_from_the_future(
    seed: int, interval: float
) -> None:
    uploads = shift("courier-x", seed, 2, interval_s=interval)
    assert uploads
    times = [u.at_s for u in uploads]
    assert times == sorted(times)
    seen: dict[str, dict[str, object]] = {}
    for upload in uploads:
        assert upload.fixes
        for fix in upload.fixes:
            assert _fix_epoch(fix) <= upload.at_s
            _clean, problem = validate_fix(fix, upload.at_s, LIMITS)
            assert problem is None, (fix, problem)
            previous = seen.setdefault(str(fix["fix_id"]), fix)
            assert previous == fix  # a repeated fix_id is always an exact duplicate
            assert len(str(fix["fix_id"])) <= 64


def test_a_working_day_has_stops_trips_noise_gaps_late_batches_and_duplicates() -> None:
    uploads = [u for c in range(8) for u in shift(f"c{c}", 3, 8, interval_s=5.0)]
    fixes = [f for u in uploads for f in u.fixes if not u.duplicate]
    assert len(fixes) > 5_000
    assert any(u.duplicate for u in uploads)
    assert any(u.late for u in uploads)
    late = [u for u in uploads if u.late]
    assert max(u.at_s - _fix_epoch(u.fixes[0]) for u in late) > 10 * 60
    assert {f["provider"] for f in fixes} == {"gps", "network"}
    assert {type(f["ts"]) for f in fixes} == {int, str}

    # Gaps: somewhere a courier recorded nothing for more than a minute while moving.
    one = sorted(
        (f for u in shift("c0", 3, 8, interval_s=5.0) if not u.duplicate for f in u.fixes),
        key=_fix_epoch,
    )
    gaps = [_fix_epoch(b) - _fix_epoch(a) for a, b in itertools.pairwise(one)]
    assert max(gaps) > 60
    # Dwelling: sparse fixes (battery saving) at speed ~0 for minutes.
    still = [f for f in one if f.get("speed_mps", 1.0) < 0.5 and f["provider"] == "gps"]
    assert len(still) > 20
    # Jumps: consecutive fixes kilometres apart within a minute.
    jumps = [
        (a, b)
        for a, b in itertools.pairwise(one)
        if _fix_epoch(b) - _fix_epoch(a) < 60
        and distance_m((a["lat"], a["lon"]), (b["lat"], b["lon"])) > 400
    ]
    assert jumps


def test_noise_follows_the_reported_accuracy() -> None:
    """At a fixed true position, the error of each fix scales with its claimed accuracy."""
    calm = Behaviour(jump_probability=0.0, gap_per_minute=0.0)
    device = _Device("c", "run", random.Random(5), calm, 15.0, False)
    truth = (43.2, 76.9)
    ratios: list[float] = []
    good: list[float] = []
    poor: list[float] = []
    for i in range(4000):
        fix = device.record(START + i, truth, 0.0, 0.0)
        assert fix is not None
        error = distance_m(truth, (fix["lat"], fix["lon"]))
        ratios.append(error / fix["accuracy_m"])
        (good if fix["provider"] == "gps" else poor).append(error)
    # About two thirds of the fixes lie within their accuracy radius, as the OS promises.
    within = sum(r <= 1.0 for r in ratios) / len(ratios)
    assert 0.55 < within < 0.8
    assert statistics.median(poor) > 3 * statistics.median(good)


@example(1795002722.2779999)  # t * 1000 rounds up to a whole millisecond
@given(st.floats(min_value=1.6e9, max_value=2.2e9, allow_nan=False))
def test_a_stamp_is_never_after_its_moment(t: float) -> None:
    assert _fix_epoch({"ts": _rfc3339(t)}) <= t
