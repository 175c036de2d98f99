"""Durations as written in geostream's data files: ``90d``, ``12h``, ``30m``, ``45s``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse ``<n><unit>``; raises ValueError with the offending text otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration (want e.g. 90d, 12h, 30m, 45s): {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
