"""The one settings object of geostream.

Values come, highest priority first, from ``GEOSTREAM_*`` environment variables, then from the
optional TOML file named by ``GEOSTREAM_CONFIG_FILE``, then from the defaults below. Every part
of the pipeline reads :func:`get_settings`; nothing else reads the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_DIR = CONFIG_DIR.parent


class Settings(BaseSettings):
    """Every tunable of geostream, documented in the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="GEOSTREAM_", extra="forbid", frozen=True)

    # Local stack ---------------------------------------------------------------------------
    stack_dir: Path = Field(
        default=PROJECT_DIR / ".stack",
        description="Where the local stack keeps its data, logs, jars and PIDs (git-ignored).",
    )
    kafka_version: str = Field(
        default="3.9.2", description="Apache Kafka version of the local broker (Maven Central)."
    )
    kafka_heap: str = Field(default="1g", description="Maximum Java heap of the local broker.")
    postgres_version: int | None = Field(
        default=None,
        description="PostgreSQL major version of the local stack (Debian 12: 15, 13: 17).",
    )
    postgres_port: int = Field(default=55432, description="Port of the local PostgreSQL cluster.")

    # Services ------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    database_url: str = Field(
        default="",
        description="PostgreSQL URL of the pipeline's owner role; empty means the local stack's.",
    )
    db_pool_min_size: int = Field(default=1, ge=0, description="Smallest DB pool size.")
    db_pool_max_size: int = Field(default=8, ge=1, description="Largest DB pool size.")

    # Data files ------------------------------------------------------------------------------
    topics_file: Path = Field(
        default=CONFIG_DIR / "topics.yaml", description="Kafka topics: partitions and retention."
    )
    retention_file: Path = Field(
        default=CONFIG_DIR / "retention.yaml", description="Retention classes and periods."
    )
    geofences_file: Path = Field(
        default=CONFIG_DIR / "geofences.geojson", description="Geofences (GeoJSON features)."
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix for every topic name; lets several pipelines share a broker.",
    )

    # Ingest (device gateway) -----------------------------------------------------------------

    # Processors (worker, cleaning, segmentation) ---------------------------------------------

    # Sink and retention ----------------------------------------------------------------------

    # Dispatcher API --------------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("GEOSTREAM_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
