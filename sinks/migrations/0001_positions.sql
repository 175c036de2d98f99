-- Positions: one row per clean fix, a hypertable on ts with a PostGIS point.
-- Later migrations add the rest of the pipeline's tables; this one proves the mechanism.
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE positions (
    ts              timestamptz      NOT NULL,
    org_id          text             NOT NULL,
    courier_id      text             NOT NULL,
    device_id       text             NOT NULL,
    fix_id          text             NOT NULL,
    geom            geometry(Point, 4326) NOT NULL,
    accuracy_m      real,
    speed_mps       real,
    heading_deg     real,
    altitude_m      real,
    zone_ids        text[]           NOT NULL DEFAULT '{}',
    trip_id         text,
    received_at     timestamptz      NOT NULL,
    retention_class text             NOT NULL DEFAULT 'raw_fixes',
    expires_at      timestamptz      NOT NULL,
    -- The idempotency key: a replayed fix is the same row. It includes ts because a unique
    -- index on a hypertable must contain the partitioning column.
    PRIMARY KEY (org_id, courier_id, fix_id, ts)
);

SELECT create_hypertable('positions', by_range('ts', INTERVAL '1 day'));

-- Dispatcher queries: one courier's track, newest first.
CREATE INDEX positions_courier_ts ON positions (org_id, courier_id, ts DESC);
CREATE INDEX positions_geom ON positions USING gist (geom);
