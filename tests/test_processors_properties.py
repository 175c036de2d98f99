"""Hypothesis properties of cleaning and segmentation (pure, no I/O)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processors_helpers import fix, processor

from processors import state as state_codec
from processors.pipeline import CourierProcessor, Outputs

# A courier's day as legs: (seconds between fixes, number of fixes, speed m/s, heading degrees).
legs = st.lists(
    st.tuples(
        st.integers(min_value=2, max_value=40),
        st.integers(min_value=1, max_value=40),
        st.sampled_from([0.0, 0.0, 0.5, 1.4, 4.0, 9.0, 15.0]),
        st.integers(min_value=0, max_value=359),
    ),
    min_size=1,
    max_size=12,
)
gaps = st.lists(st.integers(min_value=0, max_value=1500), min_size=12, max_size=12)

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(leg_list, gap_list):
    fixes = []
    t = 0.0
    north = east = 0.0
    n = 0
    for (period, count, speed, heading), gap in zip(leg_list, gap_list, strict=False):
        t += gap
        for _ in range(count):
            jitter_n = ((n * 7919) % 13 - 6) * 0.8
            jitter_e = ((n * 104_729) % 11 - 5) * 0.8
            fixes.append(fix(t, north + jitter_n, east + jitter_e, fix_id=f"f{n}"))
            n += 1
            t += period
            north += speed * period * math.cos(math.radians(heading))
            east += speed * period * math.sin(math.radians(heading))
    return fixes


NO_HOLD_BOUND = 1e9  # s: longer than any test's data, so only the event-time window releases


def feed(proc: CourierProcessor, fixes, splits=()):
    """Process everything; at each split the state goes through bytes and back."""
    state = proc.new_state("acme", "c1")
    out = Outputs()
    for i, f in enumerate(fixes):
        if i in splits:
            state = state_codec.loads(state_codec.dumps(state))
        out.extend(proc.process(state, f))
    out.extend(proc.finish(state))
    final = proc.open_stop(state)
    stops = {s.stop_id: s for s in out.stops}
    if final is not None:
        stops[final.stop_id] = final
    return out, sorted(stops.values(), key=lambda s: s.start)


@PROPS
@given(legs, gaps)
def test_stops_never_overlap_and_no_fix_is_in_two_stops(leg_list, gap_list):
    out, stops = feed(processor(), build(leg_list, gap_list))
    for a, b in itertools.pairwise(stops):
        assert a.end < b.start
    for f in out.clean:
        containing = [s for s in stops if s.start <= f.ts <= s.end]
        assert len(containing) <= 1


@PROPS
@given(legs, gaps)
def test_trip_distance_is_the_sum_of_its_steps(leg_list, gap_list):
    out, stops = feed(processor(), build(leg_list, gap_list))
    for trip in out.trips:
        steps = sum(f.distance_m for f in out.clean if trip.start < f.ts <= trip.end)
        assert math.isclose(trip.distance_m, steps, rel_tol=1e-9, abs_tol=1e-6)
        assert trip.end > trip.start
    for trip in out.trips:  # trips and stops never overlap (they may touch)
        for stop in stops:
            assert trip.end <= stop.start or trip.start >= stop.end


@PROPS
@given(legs, gaps, st.lists(st.integers(min_value=1, max_value=400), max_size=8))
def test_output_is_independent_of_batch_boundaries(leg_list, gap_list, splits):
    fixes = build(leg_list, gap_list)
    proc = processor(reorder_window_s=20.0)
    whole, whole_stops = feed(proc, fixes)
    split, split_stops = feed(proc, fixes, set(splits))
    assert whole_stops == split_stops
    assert whole.trips == split.trips
    assert whole.clean == split.clean
    assert whole.events == split.events


@PROPS
@given(legs, gaps, st.randoms(use_true_random=False))
def test_duplicates_and_reordering_yield_the_same_stops(leg_list, gap_list, rnd):
    window = 30.0
    proc = processor(reorder_window_s=window, reorder_hold_s=NO_HOLD_BOUND)
    fixes = build(leg_list, gap_list)
    messy = list(fixes)
    for i in range(len(messy) - 1):  # swap neighbours that are within the reorder window
        a, b = messy[i], messy[i + 1]
        if rnd.random() < 0.3 and (b.ts - a.ts).total_seconds() < window:
            messy[i], messy[i + 1] = b, a
    for i in sorted(rnd.sample(range(len(messy)), k=min(5, len(messy))), reverse=True):
        messy.insert(i + 1, messy[i])  # a retried fix right after the original
    clean_out, clean_stops = feed(proc, fixes)
    messy_out, messy_stops = feed(proc, messy)
    assert clean_stops == messy_stops
    assert clean_out.trips == messy_out.trips
    assert {r.reason for r in messy_out.rejected} <= {"duplicate_fix_id", "duplicate_ts"}


upload_sizes = st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=40)


@PROPS
@given(legs, gaps, st.randoms(use_true_random=False), upload_sizes)
def test_a_run_of_fixes_in_one_call_equals_fix_by_fix(leg_list, gap_list, rnd, chunk_sizes):
    """Without a hold bound ``process_many`` releases the reorder buffer once per call;
    nothing else may differ."""
    proc = processor(reorder_window_s=rnd.choice([0.0, 5.0, 30.0]), reorder_hold_s=NO_HOLD_BOUND)
    messy = build(leg_list, gap_list)
    for i in range(len(messy) - 1):  # neighbours swapped, across the reorder window too
        if rnd.random() < 0.25:
            messy[i], messy[i + 1] = messy[i + 1], messy[i]
    for i in sorted(rnd.sample(range(len(messy)), k=min(4, len(messy))), reverse=True):
        messy.insert(i + 1, messy[i])  # retried
    for i in sorted(rnd.sample(range(len(messy)), k=min(3, len(messy))), reverse=True):
        jump = replace(messy[i], fix_id=f"jump{i}", lat=messy[i].lat + 1.0)
        messy.insert(i + 1, replace(jump, ts=jump.ts + timedelta(seconds=1)))  # rejected later
        messy.insert(i + 2, messy[i])  # retried after that
    for i in rnd.sample(range(len(messy)), k=min(3, len(messy))):  # rejected at once
        messy[i] = replace(messy[i], accuracy_m=5000.0)
    if len(messy) > 6:  # far older than the rest: late
        messy.insert(len(messy) - 2, replace(messy[1], fix_id="late", ts=messy[1].ts))
    one_by_one = proc.new_state("acme", "c1")
    in_runs = proc.new_state("acme", "c1")
    expected = Outputs()
    for f in messy:
        expected.extend(proc.process(one_by_one, f))
    got = Outputs()
    at = 0
    for size in itertools.cycle(chunk_sizes):
        if at >= len(messy):
            break
        got.extend(proc.process_many(in_runs, messy[at : at + size]))
        at += size
    assert got == expected
    assert state_codec.dumps(in_runs) == state_codec.dumps(one_by_one)
    expected.extend(proc.finish(one_by_one))
    got.extend(proc.finish(in_runs))
    assert got == expected
    assert len(expected.clean) + len(expected.rejected) == len(messy)  # each fix accounted for


@PROPS
@given(legs, gaps, st.randoms(use_true_random=False), upload_sizes)
def test_without_a_hold_every_upload_is_out_before_the_next(leg_list, gap_list, rnd, sizes):
    """Default hold 0: whatever the order, each upload's fixes all come out of the call that
    took the upload, and the live position is its newest clean fix (issue 15)."""
    proc = processor(reorder_window_s=rnd.choice([0.0, 5.0, 30.0]))
    messy = build(leg_list, gap_list)
    for i in range(len(messy) - 1):
        if rnd.random() < 0.25:
            messy[i], messy[i + 1] = messy[i + 1], messy[i]
    state = proc.new_state("acme", "c1")
    at = 0
    for size in itertools.cycle(sizes):
        if at >= len(messy):
            break
        upload = messy[at : at + size]
        at += size
        out = proc.process_many(state, upload)
        assert state.buffer == []
        assert len(out.clean) + len(out.rejected) == len(upload)
        live = [f for f in out.clean if not f.is_late]
        if live:
            assert out.latest == max(live, key=lambda f: f.ts)
