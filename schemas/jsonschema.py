"""Generates the JSON Schema files in ``schemas/json/`` from :mod:`schemas.records`."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.records import RECORDS, SCHEMA_VERSION
from schemas.wire import adapter

JSON_DIR = Path(__file__).resolve().parent / "json"


def render(record_type: type) -> bytes:
    """The JSON Schema document of one record, byte-stable for a given definition."""
    schema = adapter(record_type).json_schema(mode="serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"geostream/v{SCHEMA_VERSION}/{record_type.__name__}.json",
        **schema,
    }
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def expected_files() -> dict[Path, bytes]:
    """Every schema file as it should be on disk."""
    return {
        JSON_DIR / f"{record_type.__name__}.v{SCHEMA_VERSION}.json": render(record_type)
        for record_type in RECORDS
    }


def stale_files(directory: Path = JSON_DIR) -> list[Path]:
    """Files that differ from their definitions, are missing, or are left over."""
    expected = {directory / path.name: body for path, body in expected_files().items()}
    stale = [p for p, body in expected.items() if not p.exists() or p.read_bytes() != body]
    stale += [p for p in directory.glob("*.json") if p not in expected]
    return sorted(stale)


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Regenerate the files and remove leftovers; returns what changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = stale_files(directory)
    expected = {directory / path.name: body for path, body in expected_files().items()}
    for path in changed:
        if path in expected:
            path.write_bytes(expected[path])
        else:
            path.unlink()
    return changed
