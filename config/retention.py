"""Retention classes and their periods, from ``config/retention.yaml``.

Pure logic: the policy is loaded once and then answers without I/O, so the processors can tag
every record and the sink can delete by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from config.durations import parse_duration


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each class of data is kept, with per-organisation overrides."""

    periods: dict[str, timedelta]
    org_overrides: dict[str, dict[str, timedelta]] = field(default_factory=dict)

    def period(self, retention_class: str, org_id: str | None = None) -> timedelta:
        """The period for ``retention_class``, overridden for ``org_id`` where configured."""
        if org_id is not None:
            override = self.org_overrides.get(org_id, {}).get(retention_class)
            if override is not None:
                return override
        try:
            return self.periods[retention_class]
        except KeyError:
            raise KeyError(f"unknown retention class {retention_class!r}") from None

    def expires_at(self, retention_class: str, org_id: str | None, ts: datetime) -> datetime:
        """When a record of this class, taken at ``ts``, must be gone."""
        return ts + self.period(retention_class, org_id)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RetentionPolicy:
        """Build from the parsed YAML document; raises ValueError on anything unknown."""
        classes = data.get("classes") or {}
        if not classes:
            raise ValueError("retention file defines no classes")
        periods = {name: parse_duration(str(spec["period"])) for name, spec in classes.items()}
        overrides: dict[str, dict[str, timedelta]] = {}
        for org_id, org_classes in (data.get("orgs") or {}).items():
            unknown = set(org_classes) - set(periods)
            if unknown:
                raise ValueError(f"org {org_id!r} overrides unknown classes {sorted(unknown)}")
            overrides[str(org_id)] = {
                name: parse_duration(str(text)) for name, text in org_classes.items()
            }
        return cls(periods=periods, org_overrides=overrides)

    @classmethod
    def load(cls, path: Path) -> RetentionPolicy:
        """Read the retention file."""
        with path.open() as stream:
            return cls.from_mapping(yaml.safe_load(stream) or {})
