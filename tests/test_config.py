"""Settings, durations, retention classes and topic specs: pure, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.durations import parse_duration
from config.retention import RetentionPolicy
from config.settings import CONFIG_DIR, Settings
from config.topics import load_topics


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSTREAM_KAFKA_BOOTSTRAP", "10.0.0.1:9092")
    monkeypatch.setenv("GEOSTREAM_POSTGRES_PORT", "6543")
    settings = Settings()
    assert settings.kafka_bootstrap == "10.0.0.1:9092"
    assert settings.postgres_port == 6543


def test_config_file_sits_below_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "geostream.toml"
    config.write_text('kafka_bootstrap = "file:9092"\ntopic_prefix = "from-file."\n')
    monkeypatch.setenv("GEOSTREAM_CONFIG_FILE", str(config))
    monkeypatch.setenv("GEOSTREAM_TOPIC_PREFIX", "from-env.")
    settings = Settings()
    assert settings.kafka_bootstrap == "file:9092"
    assert settings.topic_prefix == "from-env."


def test_unknown_setting_in_config_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "geostream.toml"
    config.write_text('kafka_bootstrapp = "typo:9092"\n')
    monkeypatch.setenv("GEOSTREAM_CONFIG_FILE", str(config))
    with pytest.raises(ValueError, match="kafka_bootstrapp"):
        Settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), (" 30m", timedelta(minutes=30)),
     ("45s", timedelta(seconds=45))],
)  # fmt: skip
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "90", "d", "1.5d", "-1d", "10w"])
def test_bad_durations_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


POLICY = RetentionPolicy.from_mapping(
    {
        "classes": {"raw_fixes": {"period": "90d"}, "technical": {"period": "30d"}},
        "orgs": {"acme": {"raw_fixes": "30d"}},
    }
)


def test_org_override_wins_for_its_org_only() -> None:
    assert POLICY.period("raw_fixes", "acme") == timedelta(days=30)
    assert POLICY.period("raw_fixes", "globex") == timedelta(days=90)
    assert POLICY.period("technical", "acme") == timedelta(days=30)


@given(st.datetimes(timezones=st.just(UTC), max_value=datetime(9000, 1, 1)))
def test_expiry_is_the_timestamp_plus_the_period(ts: datetime) -> None:
    assert POLICY.expires_at("raw_fixes", "globex", ts) - ts == timedelta(days=90)
    assert POLICY.expires_at("raw_fixes", "acme", ts) - ts == timedelta(days=30)


def test_unknown_class_and_unknown_override_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown retention class"):
        POLICY.period("selfies")
    with pytest.raises(ValueError, match="unknown classes"):
        RetentionPolicy.from_mapping(
            {"classes": {"raw_fixes": {"period": "1d"}}, "orgs": {"a": {"trips": "1d"}}}
        )


def test_shipped_retention_file_covers_every_record_class() -> None:
    from typing import get_args

    from schemas.records import RetentionClass
    from sinks.audit import AUDIT_CLASS
    from sinks.erasure import RECEIPT_CLASS

    policy = RetentionPolicy.load(CONFIG_DIR / "retention.yaml")
    # every record's class, and those of the database's own records: nothing unused
    assert set(policy.periods) == {*get_args(RetentionClass), RECEIPT_CLASS, AUDIT_CLASS}


def test_shipped_topics_obey_their_retention_classes() -> None:
    policy = RetentionPolicy.load(CONFIG_DIR / "retention.yaml")
    specs = load_topics(CONFIG_DIR / "topics.yaml", policy)
    assert {"fixes.raw", "fixes.clean", "fixes.rejected", "courier.events", "trips", "stops",
            "courier.latest"} <= set(specs)  # fmt: skip
    for spec in specs.values():
        config = spec.broker_config()
        kept = timedelta(milliseconds=int(config["retention.ms"]))
        assert kept <= policy.period(spec.retention_class), spec.name
    assert specs["courier.latest"].broker_config()["cleanup.policy"] == "compact,delete"
    assert specs["fixes.raw"].broker_config()["cleanup.policy"] == "delete"


def test_topic_buffer_longer_than_its_class_is_refused(tmp_path: Path) -> None:
    topics = tmp_path / "topics.yaml"
    topics.write_text(
        "topics:\n  t:\n    partitions: 1\n    retention_class: technical\n    retention: 31d\n"
    )
    with pytest.raises(ValueError, match="allows only"):
        load_topics(topics, POLICY)


def test_settings_command_never_prints_a_password() -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "GEOSTREAM_DB_API_PASSWORD": "hunter2-api",
        "GEOSTREAM_DATABASE_URL": "postgresql://owner:hunter2-owner@127.0.0.1:1/db",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "geostream.cli", "settings"],
        capture_output=True, text=True, check=True, env=env, timeout=60,
    ).stdout  # fmt: skip
    assert "hunter2" not in shown
    assert "GEOSTREAM_DB_API_PASSWORD=***" in shown
    assert "GEOSTREAM_DATABASE_URL=postgresql://owner:***@127.0.0.1:1/db" in shown
