-- positions: fewer, better indexes for the write rate (measured by `geostream bench sink`).
--
-- * The idempotency key keeps its columns (a replayed fix is still the same row) but in the
--   order (org_id, courier_id, ts, fix_id), so the key's own index also serves "one courier's
--   track in a time range, newest first"; the separate (org_id, courier_id, ts DESC) index
--   becomes redundant and goes: one B-tree less to maintain per fix.
-- * The GiST index on geom goes: no query reads historical positions by area (zone
--   membership is precomputed into zone_ids, and "who is in a zone now" reads
--   latest_positions, which keeps its spatial index), and it was the most expensive index to
--   maintain, halving the COPY rate.
ALTER TABLE positions DROP CONSTRAINT positions_pkey;
ALTER TABLE positions ADD CONSTRAINT positions_pkey PRIMARY KEY (org_id, courier_id, ts, fix_id);
DROP INDEX positions_courier_ts;
DROP INDEX positions_geom;
