-- The sink's tables: the rest of positions, stops, trips, courier events, latest positions and
-- the daily per-courier aggregates. Every table carries org_id first in its keys (isolation and
-- the dispatcher's "my couriers" queries) and a unique key that makes every write idempotent:
-- the sink writes through INSERT ... ON CONFLICT, so a replayed record is the same row.

-- Chunks live in a schema of their own that no other role may use. TimescaleDB copies a
-- hypertable's grants to its chunks but not its row-level security, so a role allowed to read
-- a hypertable could otherwise read every org's rows straight from a chunk by name; reads
-- through the hypertable need no rights on the chunk schema.
CREATE SCHEMA geostream_chunks;
REVOKE ALL ON SCHEMA geostream_chunks FROM PUBLIC;

-- positions: 0001's table is rebuilt (its rows copied) so that its chunks move to that schema,
-- with the fields of EnrichedFix that 0001 did not store. Data minimisation: battery, provider
-- and the mock flag stay out (not needed once a fix is clean). The idempotency key is 0001's.
CREATE TABLE positions_next (
    ts                  timestamptz      NOT NULL,
    org_id              text             NOT NULL,
    courier_id          text             NOT NULL,
    device_id           text             NOT NULL,
    fix_id              text             NOT NULL,
    geom                geometry(Point, 4326) NOT NULL,
    accuracy_m          real,
    speed_mps           real,
    heading_deg         real,
    altitude_m          real,
    zone_ids            text[]           NOT NULL DEFAULT '{}',
    trip_id             text,
    received_at         timestamptz      NOT NULL,
    retention_class     text             NOT NULL DEFAULT 'raw_fixes',
    expires_at          timestamptz      NOT NULL,
    distance_m          double precision NOT NULL DEFAULT 0,
    odometer_m          double precision NOT NULL DEFAULT 0,
    derived_speed_mps   real,
    derived_heading_deg real,
    stop_id             text,
    is_late             boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, courier_id, fix_id, ts)
);
-- Chunks of 1 day: at a few thousand couriers at one fix every few seconds a day of positions
-- and its indexes stays well inside memory, and retention drops whole days with drop_chunks.
SELECT create_hypertable('positions_next', 'ts', chunk_time_interval => INTERVAL '1 day',
                         associated_schema_name => 'geostream_chunks');
INSERT INTO positions_next (ts, org_id, courier_id, device_id, fix_id, geom, accuracy_m,
        speed_mps, heading_deg, altitude_m, zone_ids, trip_id, received_at, retention_class,
        expires_at)
    SELECT ts, org_id, courier_id, device_id, fix_id, geom, accuracy_m, speed_mps,
        heading_deg, altitude_m, zone_ids, trip_id, received_at, retention_class, expires_at
    FROM positions;
DROP TABLE positions;
ALTER TABLE positions_next RENAME TO positions;
ALTER TABLE positions RENAME CONSTRAINT positions_next_pkey TO positions_pkey;
-- One courier's track in a time range, newest first; the spatial index serves area queries.
CREATE INDEX positions_courier_ts ON positions (org_id, courier_id, ts DESC);
CREATE INDEX positions_geom ON positions USING gist (geom);
COMMENT ON TABLE positions IS 'Clean fixes (fixes.clean); idempotency key (org_id, courier_id, fix_id, ts).';

-- stops: one row per stop_id. A stop is emitted open, then again (same stop_id, same start)
-- when it grows or closes; the sink keeps the newest version (closed beats open, later end
-- beats earlier end), so replays of an old open version never undo a closed one.
CREATE TABLE stops (
    start_ts        timestamptz      NOT NULL,
    end_ts          timestamptz      NOT NULL,
    org_id          text             NOT NULL,
    courier_id      text             NOT NULL,
    stop_id         text             NOT NULL,
    geom            geometry(Point, 4326) NOT NULL,
    duration_s      double precision NOT NULL CHECK (duration_s >= 0),
    fix_count       integer          NOT NULL CHECK (fix_count >= 1),
    zone_id         text,
    is_open         boolean          NOT NULL,
    retention_class text             NOT NULL DEFAULT 'stops',
    expires_at      timestamptz      NOT NULL,
    written_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT stops_end_after_start CHECK (end_ts >= start_ts),
    PRIMARY KEY (org_id, stop_id, start_ts)
);
-- Stops and trips are a few hundred per courier per day: week-long chunks.
SELECT create_hypertable('stops', 'start_ts', chunk_time_interval => INTERVAL '7 days',
                         associated_schema_name => 'geostream_chunks');
CREATE INDEX stops_courier_start ON stops (org_id, courier_id, start_ts DESC);

-- trips: closed trips with their simplified route as a LineString.
CREATE TABLE trips (
    start_ts        timestamptz      NOT NULL,
    end_ts          timestamptz      NOT NULL,
    org_id          text             NOT NULL,
    courier_id      text             NOT NULL,
    trip_id         text             NOT NULL,
    path            geometry(LineString, 4326) NOT NULL,
    distance_m      double precision NOT NULL CHECK (distance_m >= 0),
    duration_s      double precision NOT NULL CHECK (duration_s >= 0),
    avg_speed_mps   real             NOT NULL,
    max_speed_mps   real             NOT NULL,
    fix_count       integer          NOT NULL CHECK (fix_count >= 1),
    start_stop_id   text,
    end_stop_id     text,
    closed_by       text             NOT NULL CHECK (closed_by IN ('stop', 'gap', 'timer')),
    retention_class text             NOT NULL DEFAULT 'trips',
    expires_at      timestamptz      NOT NULL,
    written_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT trips_end_after_start CHECK (end_ts >= start_ts),
    PRIMARY KEY (org_id, trip_id, start_ts)
);
SELECT create_hypertable('trips', 'start_ts', chunk_time_interval => INTERVAL '7 days',
                         associated_schema_name => 'geostream_chunks');
CREATE INDEX trips_courier_start ON trips (org_id, courier_id, start_ts DESC);

-- courier_events: stop/trip/zone events, append-only.
CREATE TABLE courier_events (
    ts              timestamptz NOT NULL,
    org_id          text        NOT NULL,
    courier_id      text        NOT NULL,
    event_id        text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('stop_started', 'stop_ended',
                        'trip_started', 'trip_ended', 'zone_enter', 'zone_exit')),
    subject_id      text        NOT NULL,
    geom            geometry(Point, 4326) NOT NULL,
    retention_class text        NOT NULL DEFAULT 'events',
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (org_id, event_id, ts)
);
SELECT create_hypertable('courier_events', 'ts', chunk_time_interval => INTERVAL '7 days',
                         associated_schema_name => 'geostream_chunks');
CREATE INDEX courier_events_courier_ts ON courier_events (org_id, courier_id, ts DESC);

-- latest_positions: one row per courier, replaced only by a newer fix (late fixes never win).
-- A plain table: it is small (one row per courier) and updated in place.
CREATE TABLE latest_positions (
    org_id          text        NOT NULL,
    courier_id      text        NOT NULL,
    ts              timestamptz NOT NULL,
    device_id       text        NOT NULL,
    fix_id          text        NOT NULL,
    geom            geometry(Point, 4326) NOT NULL,
    accuracy_m      real,
    speed_mps       real,
    heading_deg     real,
    zone_ids        text[]      NOT NULL DEFAULT '{}',
    trip_id         text,
    stop_id         text,
    received_at     timestamptz NOT NULL,
    retention_class text        NOT NULL DEFAULT 'raw_fixes',
    expires_at      timestamptz NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, courier_id)
);
-- "Latest positions of an org" walks the primary key; "who is in zone Z now" uses the GIN
-- index on zone_ids (with org_id from RLS / the query) and ts for freshness.
CREATE INDEX latest_positions_org_ts ON latest_positions (org_id, ts DESC);
CREATE INDEX latest_positions_zones ON latest_positions USING gin (zone_ids);
CREATE INDEX latest_positions_geom ON latest_positions USING gist (geom);

-- courier_daily: daily distance and stop time per courier (retention class daily_aggregates,
-- 730 days). A table the sink refreshes rather than a materialised view: a view over positions
-- would lose the aggregates once the raw fixes expire (90 days), and views cannot carry RLS.
CREATE TABLE courier_daily (
    org_id          text             NOT NULL,
    courier_id      text             NOT NULL,
    day             date             NOT NULL,
    distance_m      double precision NOT NULL DEFAULT 0,
    fix_count       integer          NOT NULL DEFAULT 0,
    stop_time_s     double precision NOT NULL DEFAULT 0,
    stop_count      integer          NOT NULL DEFAULT 0,
    retention_class text             NOT NULL DEFAULT 'daily_aggregates',
    expires_at      timestamptz      NOT NULL,
    refreshed_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, courier_id, day)
);
