"""Prometheus metrics of the API: requests by route and status, and latency to first byte.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware) so that streaming responses such as
``/v1/live`` pass through untouched; their latency is the time to the response headers.
The label is the route template (``/v1/couriers/{courier_id}/track``), never the raw path, so a
client cannot blow up the number of series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "geostream_api_requests_total",
    "API requests by route, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "geostream_api_request_seconds",
    "API latency to the response headers, by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LIVE_CLIENTS = Gauge("geostream_api_live_clients", "Open /v1/live streams")
LIVE_EVENTS = Counter(
    "geostream_api_live_events_total", "Updates sent to /v1/live clients, by kind", ["kind"]
)
LIVE_UNREADABLE = Counter(
    "geostream_api_live_unreadable_total", "Kafka records the live feed could not decode"
)


def route_template(app: Any, scope: Scope) -> str:
    """The path template of the route that matches ``scope``, or ``unmatched``."""
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request and times it to its response headers."""

    def __init__(self, app: ASGIApp, router_app: Any = None) -> None:
        self.app = app
        self.router_app = router_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.router_app, scope)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                LATENCY.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUESTS.labels(route, scope.get("method", ""), str(status)).inc()
