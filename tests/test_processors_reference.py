"""Our stops against MovingPandas' TrajectoryStopDetector on real recorded GPX traces.

The reference stops were produced by tests/data/make_mp_reference.py (MovingPandas in a
throwaway environment, never a dependency); see tests/data/README.md for the traces' origin.
A match: time overlap at least half of the shorter stop, centres within max(diameter, 50 m).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from config.settings import get_settings
from processors.config import ProcessorConfig
from processors.geo import haversine_m
from processors.offline import read_trace, segment
from processors.pipeline import CourierProcessor

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "mp_reference.json").read_text())
CASES = [
    (trace, run_name)
    for trace, entry in sorted(REFERENCE["traces"].items())
    for run_name in sorted(entry["runs"])
]

Span = tuple[datetime, datetime, float, float]


def matches(a: Span, b: Span, diameter: float) -> bool:
    overlap = (min(a[1], b[1]) - max(a[0], b[0])).total_seconds()
    shorter = min((a[1] - a[0]).total_seconds(), (b[1] - b[0]).total_seconds())
    close = haversine_m(a[2], a[3], b[2], b[3]) <= max(diameter, 50.0)
    return close and overlap >= shorter / 2 and overlap >= 0


def precision_recall(ours: list[Span], ref: list[Span], diameter: float) -> tuple[float, float]:
    tp_ours = sum(any(matches(o, r, diameter) for r in ref) for o in ours)
    tp_ref = sum(any(matches(o, r, diameter) for o in ours) for r in ref)
    precision = tp_ours / len(ours) if ours else 1.0
    recall = tp_ref / len(ref) if ref else 1.0
    return precision, recall


def our_stops(trace: str, diameter: float, duration: float) -> list[Span]:
    config = ProcessorConfig.from_settings(
        get_settings(),
        stop_max_diameter_m=diameter,
        stop_min_duration_s=duration,
        reorder_window_s=0.0,
    )
    result = segment(CourierProcessor(config), read_trace(DATA / "traces" / trace))
    return [(s.start, s.end, s.lat, s.lon) for s in result.stops]


def test_matching_rule_is_strict():
    t0 = datetime.fromisoformat("2024-01-01T10:00:00+00:00")
    t1 = datetime.fromisoformat("2024-01-01T10:10:00+00:00")
    t2 = datetime.fromisoformat("2024-01-01T10:20:00+00:00")
    assert matches((t0, t1, 45.0, 4.0), (t0, t1, 45.0, 4.0), 80)
    assert not matches((t0, t1, 45.0, 4.0), (t1, t2, 45.0, 4.0), 80)  # no overlap
    assert not matches((t0, t1, 45.0, 4.0), (t0, t1, 45.01, 4.0), 80)  # 1.1 km apart


@pytest.mark.parametrize(("trace", "run_name"), CASES)
def test_stops_match_movingpandas(trace: str, run_name: str):
    run = REFERENCE["traces"][trace]["runs"][run_name]
    ref = [
        (
            datetime.fromisoformat(s["start"]),
            datetime.fromisoformat(s["end"]),
            s["lat"],
            s["lon"],
        )
        for s in run["stops"]
    ]
    ours = our_stops(trace, run["max_diameter"], run["min_duration_s"])
    precision, recall = precision_recall(ours, ref, run["max_diameter"])
    assert precision >= 0.9, (precision, recall, len(ours), len(ref))
    assert recall >= 0.9, (precision, recall, len(ours), len(ref))
