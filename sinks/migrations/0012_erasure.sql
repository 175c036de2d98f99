-- Erasure that sticks across the pipeline (privacy policy 5.1, 9.7). See docs/privacy.md.
--
-- An erasure is one call of erase_courier (the CLI, as the owner) or api_erase_courier (the
-- API, for the org of its request). In one transaction it records the request, revokes the
-- courier's device tokens and deletes the courier's rows from every table. The caller then
-- publishes it to Kafka; the worker answers with tombstones, and until the sink has passed
-- them on a topic it drops every record of the courier from that topic (the records before a
-- tombstone are all from before the erasure).

CREATE TABLE privacy_requests (
    request_id   uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    kind         text        NOT NULL CHECK (kind IN ('delete')),
    org_id       text        NOT NULL CHECK (org_id <> ''),
    -- Kept only while copies of the courier's records can still be in Kafka (the sink needs
    -- it to drop them); then set to NULL, and the receipt holds no personal data.
    courier_id   text,
    requested_by text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    forget_courier_at timestamptz NOT NULL,
    receipt      jsonb       NOT NULL DEFAULT '{}',
    expires_at   timestamptz NOT NULL
);
CREATE INDEX privacy_requests_courier ON privacy_requests (org_id, courier_id)
    WHERE courier_id IS NOT NULL;

-- The sink's topics on which it has passed the worker's tombstones for a request.
CREATE TABLE privacy_erasure_progress (
    request_id uuid        NOT NULL REFERENCES privacy_requests ON DELETE CASCADE,
    topic      text        NOT NULL,
    cleared_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, topic)
);
REVOKE ALL ON privacy_requests, privacy_erasure_progress FROM PUBLIC;

-- Rows deleted per table, as a JSON object. The caller's privileges do not matter: this runs
-- as the owner, so callers other than the owner go through api_erase_courier.
CREATE FUNCTION erase_courier(
    p_org text, p_courier text, p_requested_by text,
    p_forget_after interval, p_keep_receipt interval
) RETURNS TABLE (request_id uuid, requested_at timestamptz, deleted jsonb, devices text[])
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
DECLARE
    t text;
    n bigint;
BEGIN
    IF coalesce(p_org, '') = '' OR coalesce(p_courier, '') = '' THEN
        RAISE EXCEPTION 'an erasure names an org and a courier' USING ERRCODE = '22023';
    END IF;
    -- First, so that a sink transaction in flight (it holds SHARE) commits before the deletes
    -- below look, and any later one sees this request and drops the courier's records.
    INSERT INTO privacy_requests AS r
        (kind, org_id, courier_id, requested_by, forget_courier_at, expires_at)
    VALUES ('delete', p_org, p_courier, p_requested_by, now() + p_forget_after,
            now() + p_keep_receipt)
    RETURNING r.request_id, r.requested_at INTO request_id, requested_at;

    SELECT coalesce(array_agg(DISTINCT d.device_id ORDER BY d.device_id), '{}') INTO devices
    FROM device_tokens d
    WHERE d.org_id = p_org AND d.courier_id = p_courier AND d.revoked_at IS NULL;
    UPDATE device_tokens d SET revoked_at = now()
    WHERE d.org_id = p_org AND d.courier_id = p_courier AND d.revoked_at IS NULL;

    deleted := '{}';
    FOREACH t IN ARRAY ARRAY['positions', 'stops', 'trips', 'courier_events',
                             'latest_positions', 'courier_daily']
    LOOP
        EXECUTE format('DELETE FROM %I WHERE org_id = $1 AND courier_id = $2', t)
            USING p_org, p_courier;
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted || jsonb_build_object(t, n);
    END LOOP;
    RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION erase_courier(text, text, text, interval, interval) FROM PUBLIC;

-- The API's erasure: only ever of the org its request set (geostream.org_id).
CREATE FUNCTION api_erase_courier(
    p_courier text, p_requested_by text, p_forget_after interval, p_keep_receipt interval
) RETURNS TABLE (request_id uuid, requested_at timestamptz, deleted jsonb, devices text[])
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
BEGIN
    IF request_org() IS NULL THEN
        RAISE EXCEPTION 'no org set for this request' USING ERRCODE = '42501';
    END IF;
    RETURN QUERY SELECT * FROM erase_courier(request_org(), p_courier, p_requested_by,
                                             p_forget_after, p_keep_receipt);
END
$$;
REVOKE ALL ON FUNCTION api_erase_courier(text, text, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_erase_courier(text, text, interval, interval) TO geostream_api;

-- The receipt, once the caller has published the request; only the request's own org.
CREATE FUNCTION api_store_receipt(p_request uuid, p_receipt jsonb) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    UPDATE privacy_requests SET receipt = p_receipt
    WHERE request_id = p_request AND org_id = request_org()
$$;
REVOKE ALL ON FUNCTION api_store_receipt(uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_store_receipt(uuid, jsonb) TO geostream_api;

-- The API erases only through api_erase_courier now: it no longer deletes rows itself.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['positions', 'stops', 'trips', 'courier_events',
                             'latest_positions', 'courier_daily']
    LOOP
        EXECUTE format('DROP POLICY %I ON %I', t || '_api_delete', t);
        EXECUTE format('REVOKE DELETE ON %I FROM geostream_api', t);
    END LOOP;
END
$$;
