-- Least privilege (docs/privacy.md): each service logs in as its own role, with only what it
-- needs. The owner runs migrations, retention and the admin commands; no service is the owner
-- or a superuser. Logins and passwords are set by `geostream db roles` (run by `stack up` and
-- by compose's init), never derived from another role's password.
--
--   geostream_gateway  asks who a device token belongs to, through device_for_token: it cannot
--                      read device_tokens (nor any other table);
--   geostream_sink     writes the pipeline's tables and asks which erasures are pending;
--   geostream_api      reads its request's org (0004), erases through api_erase_courier (0012)
--                      and writes the access audit (0013).
DO $$
BEGIN
    BEGIN
        CREATE ROLE geostream_gateway NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE geostream_sink NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

CREATE FUNCTION device_for_token(token_hash bytea)
    RETURNS TABLE (org_id text, courier_id text, device_id text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    SELECT d.org_id, d.courier_id, d.device_id
    FROM public.device_tokens d
    WHERE d.token_hash = device_for_token.token_hash AND d.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION device_for_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION device_for_token(bytea) TO geostream_gateway;

-- The sink writes every org's rows. TimescaleDB refuses writes to a hypertable under
-- row-level security (and COPY is refused under it anyway), so the role must have BYPASSRLS,
-- which only a superuser can give: the local stack's bootstrap and compose's initdb script
-- do. It may still only select, insert and update these tables.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['positions', 'stops', 'trips', 'courier_events', 'latest_positions']
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I TO geostream_sink', t);
    END LOOP;
END
$$;

-- The erasures pending on each of the sink's topics (sinks/erasure.py). Takes SHARE on
-- privacy_requests for the caller's transaction, which the sink role could not take itself.
CREATE FUNCTION sink_pending_erasures(p_topics text[])
    RETURNS TABLE (topic text, org_id text, courier_id text)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
BEGIN
    LOCK TABLE privacy_requests IN SHARE MODE;
    RETURN QUERY
        SELECT t.topic, r.org_id, r.courier_id
        FROM privacy_requests r CROSS JOIN unnest(p_topics) AS t(topic)
        WHERE r.courier_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM privacy_erasure_progress p
            WHERE p.request_id = r.request_id AND p.topic = t.topic);
END
$$;

CREATE FUNCTION sink_mark_passed(p_topic text, p_org text, p_courier text) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    INSERT INTO privacy_erasure_progress (request_id, topic)
    SELECT request_id, p_topic FROM privacy_requests
    WHERE org_id = p_org AND courier_id = p_courier
    ON CONFLICT DO NOTHING
$$;
REVOKE ALL ON FUNCTION sink_pending_erasures(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION sink_mark_passed(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sink_pending_erasures(text[]) TO geostream_sink;
GRANT EXECUTE ON FUNCTION sink_mark_passed(text, text, text) TO geostream_sink;
