"""The e2e benchmark's own logic: what the load generator posts, and how figures are read."""

from __future__ import annotations

import itertools
import time

import orjson

from geostream.bench_e2e import bucket_quantile, percentile, scrape_histogram
from geostream.loadgen import content_length, request, upload_body
from ingest.validation import TimeLimits, validate_batch


def test_generated_uploads_are_valid_fixes_of_a_steady_drive() -> None:
    now_ms = int(time.time() * 1000)
    body = orjson.loads(upload_body(7, 3, 5, now_ms - 1000, 2000, now_ms - 3_600_000))
    fixes = body["fixes"]
    verdict = validate_batch(fixes, time.time(), TimeLimits(300.0, 172_800.0))
    assert len(verdict.accepted) == 5
    assert not verdict.refused
    assert [f["fix_id"] for f in fixes] == [f"d7-3-{k}" for k in range(5)]
    assert [f["ts"] for f in fixes] == [now_ms - 1000 - (4 - k) * 2000 for k in range(5)]
    # about 1 m/s east: 2 s apart is about 2 m, never an implausible jump
    steps = [b["lon"] - a["lon"] for a, b in itertools.pairwise(fixes)]
    assert all(1.5e-5 < step < 2.5e-5 for step in steps)


def test_requests_carry_the_token_and_their_length() -> None:
    raw = request(b"gsd_abc", b'{"fixes":[]}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Authorization: Bearer gsd_abc" in head.split(b"\r\n")
    assert content_length(head) == len(body) == 12


def test_histogram_quantiles_are_read_from_cumulative_buckets() -> None:
    page = "\n".join(
        [
            "# TYPE x_seconds histogram",
            'x_seconds_bucket{le="0.1",topic="a"} 50.0',
            'x_seconds_bucket{le="0.1",topic="b"} 40.0',
            'x_seconds_bucket{le="1.0",topic="a"} 60.0',
            'x_seconds_bucket{le="1.0",topic="b"} 40.0',
            'x_seconds_bucket{le="+Inf",topic="a"} 60.0',
            'x_seconds_bucket{le="+Inf",topic="b"} 40.0',
            "x_seconds_count 100.0",
        ]
    )
    buckets = scrape_histogram(page, "x_seconds")
    assert buckets == {0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert bucket_quantile(buckets, 0.5) == 0.1
    assert bucket_quantile(buckets, 0.99) == 1.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(101)], 0.99) == 99.0
