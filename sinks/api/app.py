"""The dispatcher API as an ASGI app (FastAPI): routes, auth, errors; the SQL is elsewhere.

Isolation from the API's side: the pool logs in as ``geostream_api`` (never the owner), every
request resolves its bearer token to one dispatcher of one org, and every query runs in
:func:`sinks.isolation.org_transaction` for that org, so PostgreSQL's row-level security
decides what is visible. Another org's courier or zone is answered with 404, exactly as one
that does not exist, so ids of other orgs cannot be probed; 403 is kept for a known dispatcher
asking for something its token does not allow (privacy actions without an operator token).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' signatures, whose
# Annotated aliases (Auth, Limit, ...) are local to create_app and must stay objects.
import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import AwareDatetime

from config.retention import RetentionPolicy
from config.settings import Settings
from geostream.db import create_pool, service_database_url
from geostream.kafka import create_producer, topic_specs
from geostream.tokens import hash_token
from ingest.ratelimit import RateLimiter, retry_after_header
from processors.zones import Geofences
from sinks import audit, erasure, formats, privacy
from sinks.api import models, queries
from sinks.api.auth import Dispatcher, DispatcherCache, lookup_dispatcher
from sinks.api.live import LiveFeed, LiveHub, TooManyStreams, stream
from sinks.api.metrics import MetricsMiddleware
from sinks.api.params import ParamError, TimeRange, decode_cursor, encode_cursor, resolve_range
from sinks.isolation import org_transaction

log = logging.getLogger("geostream.api")

ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
#: A /v1/live stream asks again whether its token is good this often at the least (else
#: every cache TTL), so that a revoked token's streams end as its other requests get 401s.
LIVE_RECHECK_MIN_S = 1.0
T = TypeVar("T")

DESCRIPTION = """\
Dispatchers' view of their own organisation's couriers: latest positions, tracks, trips, stops,
zones and a live stream.

**Auth**: `Authorization: Bearer <token>` with a token from
`geostream admin create-dispatcher --org ORG`. 401: missing, unknown or revoked token.
A courier or zone of another organisation is answered exactly like one that does not exist
(404). 403: the token may not do this (privacy actions need an operator token).

**Time ranges**: `from` and `to` are RFC 3339 times with an offset (`2026-11-24T10:00:00Z`);
`to` defaults to now, `from` to one range before `to`; a range is half-open and bounded.

**Pagination**: `limit` items per page; pass the response's `next_cursor` as `cursor` for the
next page (null on the last one).
"""


@dataclass
class ApiState:
    """What the routes share; made in the lifespan."""

    settings: Settings
    url: str
    pool: AsyncConnectionPool
    cache: DispatcherCache
    hub: LiveHub
    feed: LiveFeed
    geofences: Geofences
    retention: RetentionPolicy
    producer: AIOKafkaProducer | None = None  # started by the first erasure


def session_conninfo(url: str, settings: Settings) -> str:
    """The API role's connection string with UTC and the statement timeout for every session."""
    options = f"-c TimeZone=UTC -c statement_timeout={settings.api_statement_timeout_ms}"
    return make_conninfo(url, options=options)


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def page_response(page: queries.Page, listing: str, head: dict[str, Any]) -> Response:
    """``head`` + ``next_cursor`` + the page's items, which PostgreSQL already rendered."""
    cursor = encode_cursor(listing, orjson.loads(page.next_key)) if page.next_key else None
    body = {**head, "next_cursor": cursor, "items": orjson.Fragment(page.items_json)}
    return json_response(body)


def file_response(body: str, fmt: formats.Format, name: str) -> Response:
    """An export file, offered for download as ``name``.<format>."""
    return Response(
        body,
        media_type=formats.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


def not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(404, f"{kind} {ident!r} not found in your organisation")


def create_app(settings: Settings, *, db_url: str | None = None) -> FastAPI:
    """The app; ``db_url`` overrides the API role's URL (default: enable it and derive it)."""
    holder: dict[str, ApiState] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url: str = db_url if db_url is not None else service_database_url(settings, "api")
        conninfo = session_conninfo(url, settings)
        pool = create_pool(settings, conninfo)
        await pool.open()
        hub = LiveHub(settings.api_sse_queue_size, settings.api_live_streams_per_token)
        feed = LiveFeed(settings, hub)
        geofences = Geofences.load(settings.geofences_file, settings.zone_hysteresis_m)
        holder["state"] = ApiState(
            settings, conninfo, pool, DispatcherCache(settings.api_token_cache_ttl_s), hub, feed,
            geofences, RetentionPolicy.load(settings.retention_file),
        )  # fmt: skip
        feed.start()
        log.info("dispatcher API ready (%d zones)", len(geofences.zones))
        try:
            yield
        finally:
            await feed.stop()
            await pool.close()
            producer = holder["state"].producer
            if producer is not None:
                await producer.stop()

    app = FastAPI(
        title="geostream dispatcher API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, router_app=app.router)

    def state() -> ApiState:
        return holder["state"]

    bearer = HTTPBearer(
        auto_error=False, description="Dispatcher token from `geostream admin create-dispatcher`."
    )

    # Token lookups may hold half the pool at most, so a flood of made-up tokens from many
    # addresses cannot starve the queries of dispatchers already known.
    lookups = asyncio.Semaphore(max(1, settings.db_pool_max_size // 2))
    auth_failures = RateLimiter(settings.auth_failures_per_s, settings.auth_failures_burst)

    async def resolve(token_hash: bytes) -> Dispatcher | None:
        st = state()
        hit, dispatcher = st.cache.get(token_hash)
        if not hit:
            async with lookups, st.pool.connection() as conn:
                dispatcher = await lookup_dispatcher(conn, token_hash)
            st.cache.put(token_hash, dispatcher)
        return dispatcher

    async def current_dispatcher(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Dispatcher:
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        token_hash = hash_token(credentials.credentials)
        client = request.client.host if request.client else ""
        if not state().cache.knows(token_hash):  # an address presenting unknown tokens waits
            wait = auth_failures.wait(client)
            if wait > 0:
                raise HTTPException(
                    429,
                    "too many unknown or revoked tokens from this address",
                    headers={"Retry-After": retry_after_header(wait)},
                )
        dispatcher = await resolve(token_hash)
        if dispatcher is None:
            auth_failures.take(client)
            raise HTTPException(
                401,
                "unknown or revoked dispatcher token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return dispatcher

    Auth = Annotated[Dispatcher, Depends(current_dispatcher)]
    CourierId = Annotated[
        str, Path(pattern=ID_PATTERN, max_length=128, description="The courier's id.")
    ]
    Limit = Annotated[
        int | None,
        Query(
            ge=1,
            le=settings.api_max_limit,
            description=f"Items per page (default {settings.api_default_limit}).",
        ),
    ]
    Cursor = Annotated[
        str | None, Query(max_length=2048, description="next_cursor of the previous page.")
    ]
    From = Annotated[
        AwareDatetime | None,
        Query(
            alias="from",
            description=f"Start (inclusive); default: to - {settings.api_default_range_s:g} s.",
        ),
    ]
    To = Annotated[AwareDatetime | None, Query(description="End (exclusive); default: now.")]

    async def in_org(dispatcher: Dispatcher, work: Callable[[queries.Conn], Awaitable[T]]) -> T:
        async with state().pool.connection() as conn, org_transaction(conn, dispatcher.org_id):
            return await work(conn)

    def span_of(start: datetime | None, end: datetime | None) -> TimeRange:
        return resolve_range(
            start,
            end,
            now=datetime.now(UTC),
            default_s=settings.api_default_range_s,
            max_s=settings.api_max_range_s,
        )

    def after_key(listing: str, cursor: str | None) -> tuple[datetime, str] | None:
        if cursor is None:
            return None
        ts, ident = decode_cursor(listing, cursor, ("ts", "str"))
        assert isinstance(ts, datetime)
        assert isinstance(ident, str)
        return ts, ident

    async def courier_page(
        dispatcher: Dispatcher,
        courier_id: str,
        fetch: Callable[[queries.Conn], Awaitable[queries.Page]],
        action: audit.Action,
        span: TimeRange,
    ) -> queries.Page:
        """A page of one courier's history, recorded in the access audit; 404 when the org
        knows no such courier."""

        async def work(conn: queries.Conn) -> queries.Page | None:
            page = await fetch(conn)
            if page.items_json == "[]" and not await queries.courier_known(
                conn, dispatcher.org_id, courier_id
            ):
                return None
            detail = {"from": span.start.isoformat(), "to": span.end.isoformat()}
            await audit.record(conn, state().retention, dispatcher.org_id, courier_id,
                               dispatcher.dispatcher_id, action, detail)  # fmt: skip
            return page

        page = await in_org(dispatcher, work)
        if page is None:
            raise not_found("courier", courier_id)
        return page

    @app.exception_handler(ParamError)
    async def param_error(request: Request, exc: ParamError) -> Response:
        return JSONResponse({"detail": [exc.detail()]}, status_code=422)

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def query_cancelled(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {
                "detail": f"the query ran longer than {settings.api_statement_timeout_ms} ms;"
                " ask for a shorter range or a smaller page"
            },
            status_code=503,
        )

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "database unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(psycopg.OperationalError, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)

    @app.get(
        "/v1/couriers/latest",
        response_model=models.PositionPage,
        summary="Latest position of every courier of the organisation",
    )
    async def latest(dispatcher: Auth, limit: Limit = None, cursor: Cursor = None) -> Response:
        after = str(decode_cursor("latest", cursor, ("str",))[0]) if cursor else None
        n = limit or settings.api_default_limit

        async def work(conn: queries.Conn) -> queries.Page:
            return await queries.latest_positions(conn, dispatcher.org_id, n, after)

        return page_response(await in_org(dispatcher, work), "latest", {})

    @app.get(
        "/v1/couriers/{courier_id}/track",
        response_model=models.TrackPage,
        summary="A courier's positions in a time range, and their route as GeoJSON",
    )
    async def track(
        dispatcher: Auth,
        courier_id: CourierId,
        from_: From = None,
        to: To = None,
        simplify: Annotated[
            float,
            Query(
                ge=0,
                le=1000,
                description="Douglas-Peucker tolerance of the route in metres (0: none).",
            ),
        ] = 0.0,
        limit: Limit = None,
        cursor: Cursor = None,
        format: Annotated[
            Literal["json", "gpx", "csv", "geojson"],
            Query(description="json: pages; gpx, csv, geojson: the whole range as one file."),
        ] = "json",
    ) -> Response:
        span = span_of(from_, to)
        after = after_key("track", cursor)
        n = limit or settings.api_default_limit

        async def fetch(conn: queries.Conn) -> queries.Page:
            return await queries.track(
                conn, dispatcher.org_id, courier_id, span, n, after, simplify
            )

        if format != "json":
            return await track_file(dispatcher, courier_id, span, format)
        page = await courier_page(dispatcher, courier_id, fetch, "track", span)
        geometry = orjson.Fragment(page.extra[0]) if page.extra[0] is not None else None
        route = {
            "type": "Feature",
            "geometry": geometry,
            "properties": {
                "courier_id": courier_id,
                "simplify_m": simplify,
                "points": len(orjson.loads(page.items_json)),
            },
        }
        head = {"courier_id": courier_id, "from": span.start, "to": span.end, "route": route}
        return page_response(page, "track", head)

    async def track_file(
        dispatcher: Dispatcher, courier_id: str, span: TimeRange, fmt: formats.Format
    ) -> Response:
        """The whole ``span`` of a courier's track, with its stops, as one file."""
        lookback = span.start - timedelta(seconds=settings.api_max_range_s)
        page_size = settings.api_max_limit

        async def all_items(conn: queries.Conn, fetcher: Any, *args: Any) -> list[Any]:
            items: list[Any] = []
            after: tuple[datetime, str] | None = None
            while True:
                page = await fetcher(conn, dispatcher.org_id, courier_id, span, page_size, after,
                                     *args)  # fmt: skip
                items += orjson.loads(page.items_json)
                if len(items) > settings.api_export_max_points:
                    raise HTTPException(
                        413, f"more than {settings.api_export_max_points} items; narrow the range"
                    )
                if page.next_key is None:
                    return items
                ts, ident = orjson.loads(page.next_key)
                after = (datetime.fromisoformat(ts), ident)

        async def fetch(conn: queries.Conn) -> queries.Page:
            points = await all_items(conn, queries.track, 0.0)
            stops = await all_items(conn, queries.stops, lookback)
            return queries.Page(orjson.dumps(points).decode(), None, (stops,))

        page = await courier_page(dispatcher, courier_id, fetch, "track", span)
        body = formats.render(
            fmt,
            courier_id,
            formats.track_points(orjson.loads(page.items_json)),
            formats.waypoints(page.extra[0]),
        )
        return file_response(body, fmt, f"{courier_id}-track")

    def interval_route(listing: audit.Action, fetcher: Any, model: Any, summary: str) -> None:
        @app.get(f"/v1/couriers/{{courier_id}}/{listing}", response_model=model, summary=summary)
        async def handler(
            dispatcher: Auth,
            courier_id: CourierId,
            from_: From = None,
            to: To = None,
            limit: Limit = None,
            cursor: Cursor = None,
        ) -> Response:
            span = span_of(from_, to)
            after = after_key(listing, cursor)
            n = limit or settings.api_default_limit
            lookback = span.start - timedelta(seconds=settings.api_max_range_s)

            async def fetch(conn: queries.Conn) -> queries.Page:
                page: queries.Page = await fetcher(
                    conn, dispatcher.org_id, courier_id, span, n, after, lookback
                )
                return page

            page = await courier_page(dispatcher, courier_id, fetch, listing, span)
            head = {"courier_id": courier_id, "from": span.start, "to": span.end}
            return page_response(page, listing, head)

        handler.__name__ = listing

    interval_route(
        "trips", queries.trips, models.TripPage, "A courier's trips overlapping a time range"
    )
    interval_route(
        "stops", queries.stops, models.StopPage, "A courier's stops overlapping a time range"
    )

    @app.get(
        "/v1/zones/{zone_id}/couriers",
        response_model=models.ZonePage,
        summary="Couriers inside a zone now",
    )
    async def zone_couriers(
        dispatcher: Auth,
        zone_id: Annotated[str, Path(max_length=128, description="A zone of your organisation.")],
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> Response:
        zone = next(
            (
                z
                for z in state().geofences.zones
                if z.org_id == dispatcher.org_id and z.zone_id == zone_id
            ),
            None,
        )
        if zone is None:
            raise not_found("zone", zone_id)
        after = str(decode_cursor("zone", cursor, ("str",))[0]) if cursor else None
        n = limit or settings.api_default_limit
        since = datetime.now(UTC) - timedelta(seconds=settings.api_zone_fresh_s)

        async def work(conn: queries.Conn) -> queries.Page:
            return await queries.zone_couriers(conn, dispatcher.org_id, zone_id, since, n, after)

        page = await in_org(dispatcher, work)
        return page_response(page, "zone", {"zone_id": zone_id, "kind": zone.kind})

    @app.get(
        "/v1/live",
        summary="Server-Sent Events: this organisation's position and event updates",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def live(
        dispatcher: Auth,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> StreamingResponse:
        st = state()
        assert credentials is not None  # Auth has checked it
        token_hash = hash_token(credentials.credentials)

        async def still_allowed() -> bool:
            try:
                return await resolve(token_hash) is not None
            except (psycopg.Error, PoolTimeout):
                return True  # a database outage does not end the streams it already allowed

        try:
            await asyncio.wait_for(st.feed.ready.wait(), 10.0)
        except TimeoutError as exc:
            raise HTTPException(
                503, "the live feed is not connected to Kafka; retry shortly",
                headers={"Retry-After": "5"},
            ) from exc  # fmt: skip
        try:
            subscription = st.hub.subscribe(dispatcher.org_id, token_hash.hex())
        except TooManyStreams as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from exc

        async def opened(conn: queries.Conn) -> None:  # every courier of the org is watched
            await audit.record(conn, st.retention, dispatcher.org_id, None,
                               dispatcher.dispatcher_id, "live")  # fmt: skip

        try:
            await in_org(dispatcher, opened)
        except BaseException:
            st.hub.unsubscribe(subscription)
            raise
        return StreamingResponse(
            stream(
                st.hub,
                subscription,
                settings.api_sse_heartbeat_s,
                still_allowed=still_allowed,
                recheck_s=max(settings.api_token_cache_ttl_s, LIVE_RECHECK_MIN_S),
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def operator(dispatcher: Dispatcher) -> None:
        """403 unless an operator token."""
        if not dispatcher.is_operator:
            raise HTTPException(
                403,
                "export and delete need an operator token"
                " (geostream admin create-dispatcher --operator)",
            )

    async def operator_courier(dispatcher: Dispatcher, courier_id: str) -> None:
        """403 unless an operator token; 404 unless the org knows the courier."""
        await operator(dispatcher)

        async def known(conn: queries.Conn) -> bool:
            return await queries.courier_known(conn, dispatcher.org_id, courier_id)

        if not await in_org(dispatcher, known):
            raise not_found("courier", courier_id)

    @asynccontextmanager
    async def privacy_connection(org_id: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A short-lived connection of the API role, limited to ``org_id`` for its lifetime.

        :func:`sinks.privacy.export_courier` runs its own transaction (a consistent snapshot),
        so the org is set for this session, which nothing else ever uses.
        """
        conn = await psycopg.AsyncConnection.connect(state().url, autocommit=True)
        try:
            await conn.execute("SELECT set_config('geostream.org_id', %s, false)", (org_id,))
            yield conn
        finally:
            await conn.close()

    @app.get(
        "/v1/couriers/{courier_id}/export",
        summary="Everything stored about a courier (privacy: right of access); operators only",
    )
    async def export(
        dispatcher: Auth,
        courier_id: CourierId,
        format: Annotated[
            Literal["json", "gpx", "csv", "geojson"],
            Query(description="json: every row and the access audit; gpx, csv, geojson: the"
                              " positions (and stops) only."),
        ] = "json",
    ) -> Response:  # fmt: skip
        await operator_courier(dispatcher, courier_id)
        async with privacy_connection(dispatcher.org_id) as conn:
            document = await privacy.export_courier(conn, dispatcher.org_id, courier_id)
            await audit.record(conn, state().retention, dispatcher.org_id, courier_id,
                               dispatcher.dispatcher_id, "export", {"format": format})  # fmt: skip
        if format == "json":
            return json_response(document)
        body = formats.render(format, courier_id, *privacy.export_track(document))
        return file_response(body, format, f"{courier_id}-export")

    async def started_producer() -> AIOKafkaProducer:
        st = state()
        if st.producer is None:
            producer = create_producer(settings, client_id="geostream-api")
            await producer.start()
            if st.producer is None:
                st.producer = producer
            else:  # another request started one meanwhile
                await producer.stop()
        return st.producer

    @app.delete(
        "/v1/couriers/{courier_id}/data",
        response_model=models.ErasureReceipt,
        summary="Erase a courier everywhere (privacy: erasure); operators only",
        description=(
            "Deletes every row of the courier, revokes its device tokens and makes the pipeline"
            " drop everything of the courier received before now (see docs/privacy.md)."
            " Answers with the receipt. 503: the data is deleted and the request recorded, but"
            " Kafka did not take it; send the request again."
        ),
    )
    async def delete(dispatcher: Auth, courier_id: CourierId) -> Response:
        await operator(dispatcher)
        st = state()

        async def work(conn: queries.Conn) -> erasure.Erased:
            return await erasure.erase_in_database(
                conn, settings, st.retention, dispatcher.org_id, courier_id,
                f"dispatcher:{dispatcher.dispatcher_id}", as_api=True,
            )  # fmt: skip

        erased = await in_org(dispatcher, work)
        try:
            await erasure.publish(await started_producer(), settings, erased)
        except (KafkaError, OSError) as exc:
            log.warning("erasure %s not published: %r", erased.request_id, exc)
            raise HTTPException(
                503,
                "the courier's data is deleted and the request recorded, but Kafka did not take"
                " it; send the request again",
                headers={"Retry-After": "5"},
            ) from exc
        document = erasure.receipt(erased, topic_specs(settings))

        async def keep(conn: queries.Conn) -> None:
            await erasure.store_receipt(conn, erased.request_id, document, as_api=True)

        await in_org(dispatcher, keep)
        log.info("dispatcher %s of %s erased a courier: request %s, %s",
                 dispatcher.dispatcher_id, dispatcher.org_id, erased.request_id,
                 erased.deleted)  # fmt: skip
        return json_response({"courier_id": courier_id, **document})

    @app.get(
        "/v1/audit",
        summary="Who read a courier's data, and when (access audit); operators only",
    )
    async def audit_log(
        dispatcher: Auth,
        courier: Annotated[str, Query(pattern=ID_PATTERN, max_length=128)],
        limit: Limit = None,
    ) -> Response:
        await operator(dispatcher)

        async def work(conn: queries.Conn) -> list[dict[str, Any]]:
            return await audit.read(conn, dispatcher.org_id, courier,
                                    limit or settings.api_default_limit)  # fmt: skip

        return json_response({"courier_id": courier, "items": await in_org(dispatcher, work)})

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The database answers (503 otherwise)")
    async def readyz() -> Response:
        st = state()
        live_ready = st.feed.ready.is_set()
        try:
            async with st.pool.connection(timeout=2.0) as conn:
                await queries.database_ready(conn)
        except (psycopg.Error, PoolTimeout) as exc:
            # the detail is for the log: /readyz answers anyone
            log.warning("readiness: database unavailable: %s", str(exc).strip())
            return json_response(
                {"status": "unavailable", "database": "unavailable", "live_feed": live_ready}, 503
            )
        return json_response({"status": "ready", "database": "up", "live_feed": live_ready})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
