"""``geostream segment FILE`` (offline) and ``geostream worker`` (the faust worker)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    seg = commands.add_parser(
        "segment",
        help="stops and trips of a CSV or GPX trace, as JSON lines (same code as the worker)",
    )
    seg.add_argument("file", type=Path, help="CSV courier_id,ts,lat,lon[,accuracy_m] or GPX")
    seg.add_argument("--stop-max-diameter", type=float, metavar="M", help="metres")
    seg.add_argument("--stop-min-duration", type=float, metavar="S", help="seconds")
    seg.add_argument("--gap", type=float, metavar="S", help="trip max gap, seconds")
    seg.add_argument("--rejections", action="store_true", help="also print rejected fixes")
    seg.set_defaults(handler=run_segment)

    worker = commands.add_parser("worker", help="run the faust stream processor")
    worker.add_argument("--loglevel", default="info")
    worker.set_defaults(handler=run_worker)


def run_segment(args: argparse.Namespace) -> int:
    import orjson

    from config.settings import get_settings
    from processors.config import ProcessorConfig
    from processors.offline import TraceError, lines, read_trace, segment
    from processors.pipeline import CourierProcessor
    from processors.zones import Geofences

    settings = get_settings()
    overrides: dict[str, object] = {}
    if args.stop_max_diameter is not None:
        overrides["stop_max_diameter_m"] = args.stop_max_diameter
    if args.stop_min_duration is not None:
        overrides["stop_min_duration_s"] = args.stop_min_duration
    if args.gap is not None:
        overrides["trip_max_gap_s"] = args.gap
    config = ProcessorConfig.from_settings(settings, **overrides)
    geofences = Geofences.load(settings.geofences_file, config.zone_hysteresis_m)
    try:
        fixes = read_trace(args.file)
    except (OSError, TraceError) as exc:
        print(f"geostream segment: {args.file}: {exc}", file=sys.stderr)
        return 2
    result = segment(CourierProcessor(config, geofences), fixes)
    out = sys.stdout.buffer
    for line in lines(result):
        out.write(orjson.dumps(line) + b"\n")
    if args.rejections:
        for rej in result.outputs.rejected:
            out.write(orjson.dumps({"type": "rejected", **_rejection_line(rej)}) + b"\n")
    reasons = Counter(r.reason for r in result.outputs.rejected)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "none"
    print(
        f"{len(fixes)} fixes, {len(result.stops)} stops, {len(result.trips)} trips, "
        f"rejected: {summary}",
        file=sys.stderr,
    )
    return 0


def _rejection_line(rej: Any) -> dict[str, object]:
    return {"courier_id": rej.courier_id, "fix_id": rej.fix_id, "ts": rej.ts, "reason": rej.reason}


def run_worker(args: argparse.Namespace) -> int:
    from processors.app import run_worker as run

    return run(loglevel=args.loglevel)
