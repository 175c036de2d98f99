-- Chunks keep their statistics to themselves (issue 16, finding 3). TimescaleDB copies a
-- hypertable's grants to each chunk but not its row-level security, and pg_stats shows a
-- table's column statistics (most common values: org, courier, device, trip and zone ids) to
-- whoever may select it, unless row security is on for it. A chunk with row security on and
-- no policy of its own is still read through its hypertable, under the hypertable's policies.
--
-- secure_chunks() turns it on for every chunk of a hypertable that has it. The sink calls it
-- in each write transaction (the one that made a new chunk commits with it secured), and
-- maintenance once per run.
CREATE FUNCTION secure_chunks() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    chunk regclass;
    secured integer := 0;
BEGIN
    FOR chunk IN
        SELECT c.oid::regclass
        FROM pg_inherits i
        JOIN pg_class parent ON parent.oid = i.inhparent
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE parent.relrowsecurity AND NOT c.relrowsecurity
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', chunk);
        secured := secured + 1;
    END LOOP;
    RETURN secured;
END
$$;
REVOKE ALL ON FUNCTION secure_chunks() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION secure_chunks() TO geostream_sink;

SELECT secure_chunks();
