"""Kafka topics of the pipeline, from ``config/topics.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from config.durations import parse_duration
from config.retention import RetentionPolicy

#: A compacted topic removes a superseded record (an erased courier's, after its tombstone)
#: within this (``max.compaction.lag.ms``); Kafka's default waits for the segment to close.
MAX_COMPACTION_LAG = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its logical name (without prefix) and the broker settings it needs."""

    name: str
    partitions: int
    retention_class: str
    retention: timedelta | None
    compact: bool
    description: str
    class_period: timedelta

    def broker_config(self) -> dict[str, str]:
        """Topic-level configs: ``cleanup.policy`` and ``retention.ms``.

        A compacted topic keeps the latest record per key; it still may not keep it longer than
        its class allows, so it gets ``delete`` as well with the class period.
        """
        class_period = self.class_period
        if self.compact:
            return {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(int(class_period.total_seconds() * 1000)),
                "max.compaction.lag.ms": str(int(MAX_COMPACTION_LAG.total_seconds() * 1000)),
            }
        retention = self.retention or class_period
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(int(retention.total_seconds() * 1000)),
        }


def load_topics(path: Path, policy: RetentionPolicy) -> dict[str, TopicSpec]:
    """Read the topics file; refuses buffers longer than their retention class."""
    with path.open() as stream:
        data = yaml.safe_load(stream) or {}
    specs: dict[str, TopicSpec] = {}
    for name, raw in (data.get("topics") or {}).items():
        retention = parse_duration(str(raw["retention"])) if "retention" in raw else None
        retention_class = str(raw["retention_class"])
        class_period = policy.period(retention_class)
        spec = TopicSpec(
            name=str(name),
            partitions=int(raw["partitions"]),
            retention_class=retention_class,
            retention=retention,
            compact=bool(raw.get("compact", False)),
            description=str(raw.get("description", "")),
            class_period=class_period,
        )
        if retention is not None and retention > class_period:
            raise ValueError(
                f"topic {name!r} keeps data {retention} but class "
                f"{spec.retention_class!r} allows only {class_period}"
            )
        specs[spec.name] = spec
    return specs
