"""The processors' rules as one frozen value, built from :class:`config.settings.Settings`.

Pure code takes a :class:`ProcessorConfig` (never the settings object) so tests and the offline
``geostream segment`` command can vary parameters without touching the environment. Cleaning
defaults can be overridden per organisation (``GEOSTREAM_CLEAN_ORG_OVERRIDES``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

from config.retention import RetentionPolicy
from config.settings import Settings

#: Events the worker handles per batch (and the plain-loop benchmark with it): each courier's
#: state is serialised and written to the table once per batch, not once per fix.
WORKER_BATCH_MAX = 2_000

#: Cleaning parameters an organisation may override (names without the ``clean_`` prefix).
ORG_OVERRIDABLE = (
    "max_future_s",
    "max_past_s",
    "max_accuracy_m",
    "max_speed_mps",
    "jump_recovery_fixes",
    "min_period_s",
    "jitter_radius_m",
)


@dataclass(frozen=True, slots=True)
class CleaningRules:
    """Traccar-style filter thresholds (see the settings table for why each default)."""

    max_future_s: float = 120.0
    max_past_s: float = 172_800.0
    max_accuracy_m: float = 100.0
    max_speed_mps: float = 60.0
    jump_recovery_fixes: int = 2
    min_period_s: float = 1.0
    jitter_radius_m: float = 10.0
    dedupe_memory: int = 16


@dataclass(frozen=True)
class ProcessorConfig:
    """Everything the pure processing functions need to know."""

    cleaning: CleaningRules = field(default_factory=CleaningRules)
    org_cleaning: dict[str, CleaningRules] = field(default_factory=dict)
    stop_max_diameter_m: float = 80.0
    stop_min_duration_s: float = 120.0
    trip_max_gap_s: float = 600.0
    reorder_window_s: float = 10.0
    reorder_hold_s: float = 0.0
    trip_simplify_tolerance_m: float = 10.0
    trip_path_max_points: int = 32
    stop_window_max_points: int = 16
    zone_min_dwell_s: float = 30.0
    zone_hysteresis_m: float = 20.0
    retention: RetentionPolicy | None = None

    def rules_for(self, org_id: str) -> CleaningRules:
        """The cleaning rules of ``org_id``: the defaults with its overrides applied."""
        return self.org_cleaning.get(org_id, self.cleaning)

    @cached_property
    def min_duration_ms(self) -> int:
        return int(self.stop_min_duration_s * 1000)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ProcessorConfig:
        """Build from the settings (and the retention file they name)."""
        cleaning = CleaningRules(
            max_future_s=settings.clean_max_future_s,
            max_past_s=settings.clean_max_past_s,
            max_accuracy_m=settings.clean_max_accuracy_m,
            max_speed_mps=settings.clean_max_speed_mps,
            jump_recovery_fixes=settings.clean_jump_recovery_fixes,
            min_period_s=settings.clean_min_period_s,
            jitter_radius_m=settings.clean_jitter_radius_m,
            dedupe_memory=settings.clean_dedupe_memory,
        )
        org_cleaning = {}
        for org_id, values in settings.clean_org_overrides.items():
            unknown = set(values) - set(ORG_OVERRIDABLE)
            if unknown:
                raise ValueError(f"org {org_id!r}: unknown cleaning overrides {sorted(unknown)}")
            typed = {
                k: (int(v) if k == "jump_recovery_fixes" else float(v)) for k, v in values.items()
            }
            org_cleaning[org_id] = dataclasses.replace(cleaning, **typed)  # type: ignore[arg-type]
        config = cls(
            cleaning=cleaning,
            org_cleaning=org_cleaning,
            stop_max_diameter_m=settings.stop_max_diameter_m,
            stop_min_duration_s=settings.stop_min_duration_s,
            trip_max_gap_s=settings.trip_max_gap_s,
            reorder_window_s=settings.reorder_window_s,
            reorder_hold_s=settings.reorder_hold_s,
            trip_simplify_tolerance_m=settings.trip_simplify_tolerance_m,
            trip_path_max_points=settings.trip_path_max_points,
            stop_window_max_points=settings.stop_window_max_points,
            zone_min_dwell_s=settings.zone_min_dwell_s,
            zone_hysteresis_m=settings.zone_hysteresis_m,
            retention=RetentionPolicy.load(settings.retention_file),
        )
        return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
