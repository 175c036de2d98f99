"""Regenerate tests/data/mp_reference.json: MovingPandas' stops on the traces in traces/.

Runs OUTSIDE the project environment, in a throwaway venv that has MovingPandas:

    python3 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install movingpandas
    /tmp/mpvenv/bin/python tests/data/make_mp_reference.py

Every trkpt with a time is read (all tracks and segments of the file, as one trajectory sorted
by time, repeated timestamps dropped -- exactly what the processors see after dedupe), then
TrajectoryStopDetector(traj).get_stop_points(max_diameter, min_duration) is run for each
parameter set in PARAMS.
"""

from __future__ import annotations

import json
import sys
import warnings
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import movingpandas as mpd
import pandas as pd
from geopandas import GeoDataFrame
from shapely.geometry import Point

HERE = Path(__file__).resolve().parent
PARAMS = [(80.0, 120.0), (40.0, 60.0), (150.0, 300.0)]


def read_points(path: Path) -> list[tuple[datetime, float, float]]:
    points = {}
    for el in ET.parse(path).getroot().iter():
        if not el.tag.endswith("trkpt"):
            continue
        time_el = next((c for c in el if c.tag.endswith("time")), None)
        if time_el is None or not (time_el.text or "").strip():
            continue
        ts = datetime.fromisoformat(time_el.text.strip().replace("Z", "+00:00"))
        points.setdefault(ts, (float(el.attrib["lat"]), float(el.attrib["lon"])))
    return sorted((ts, lat, lon) for ts, (lat, lon) in points.items())


def stops(points: list[tuple[datetime, float, float]], diameter: float, duration: float) -> list:
    df = pd.DataFrame(
        {"t": [p[0] for p in points], "geometry": [Point(p[2], p[1]) for p in points]}
    ).set_index("t")
    traj = mpd.Trajectory(GeoDataFrame(df, crs="EPSG:4326"), "courier")
    found = mpd.TrajectoryStopDetector(traj).get_stop_points(
        max_diameter=diameter, min_duration=timedelta(seconds=duration)
    )
    result = []
    for _, row in found.iterrows():
        start, end = (pd.Timestamp(row[k]) for k in ("start_time", "end_time"))
        start = start if start.tzinfo else start.tz_localize("UTC")
        end = end if end.tzinfo else end.tz_localize("UTC")
        result.append(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "lat": row.geometry.y,
                "lon": row.geometry.x,
                "duration_s": float(row["duration_s"]),
            }
        )
    return sorted(result, key=lambda s: s["start"])


def main() -> int:
    warnings.simplefilter("ignore")
    reference = {"movingpandas": mpd.__version__, "traces": {}}
    for path in sorted((HERE / "traces").glob("*.gpx")):
        points = read_points(path)
        runs = {}
        for diameter, duration in PARAMS:
            runs[f"{diameter:g}m_{duration:g}s"] = {
                "max_diameter": diameter,
                "min_duration_s": duration,
                "stops": stops(points, diameter, duration),
            }
        reference["traces"][path.name] = {"points": len(points), "runs": runs}
        print(path.name, len(points), {k: len(v["stops"]) for k, v in runs.items()})
    (HERE / "mp_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
