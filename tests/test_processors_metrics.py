"""The worker's plain histogram exposes exactly what prometheus-client's own would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from processors.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, PlainHistogram


def _exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@given(
    st.sampled_from([LATENCY_BUCKETS, SIZE_BUCKETS]),
    st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False)),
)
def test_plain_histogram_exposes_what_prometheus_histogram_does(
    buckets: tuple[float, ...], values: list[float]
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = PlainHistogram("h_seconds", "Help text.", buckets, ours)
    reference = Histogram("h_seconds", "Help text.", buckets=buckets, registry=theirs)
    # a value on a bound counts in that bound's bucket, as Prometheus defines ``le``
    for value in [*values, *buckets[:2]]:
        plain.observe(value)
        reference.observe(value)
    assert _exposition(ours) == _exposition(theirs)
