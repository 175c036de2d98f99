"""Serving the gateway: uvicorn with uvloop and httptools, one process (see the README notes)."""

from __future__ import annotations

import uvicorn

from config.settings import Settings
from ingest.app import Gateway


def server_config(settings: Settings, *, port: int | None = None) -> uvicorn.Config:
    """The production server setup; tests use it too, on a free port."""
    return uvicorn.Config(
        Gateway(settings),
        host=settings.ingest_host,
        port=settings.ingest_port if port is None else port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
    )


def serve(settings: Settings) -> None:
    """Run the gateway until SIGINT/SIGTERM."""
    uvicorn.Server(server_config(settings)).run()
