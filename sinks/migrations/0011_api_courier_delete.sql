-- Couriers' right to erasure through the dispatcher API (DELETE /v1/couriers/{id}/data, operator
-- tokens only). The API deletes as geostream_api, not as the owner, so the same row-level
-- security that limits its reads limits its deletes: only rows of the org named by
-- geostream.org_id can go. Nothing else in the API writes.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['positions', 'stops', 'trips', 'courier_events',
                             'latest_positions', 'courier_daily']
    LOOP
        EXECUTE format('CREATE POLICY %I ON %I FOR DELETE TO geostream_api'
                       ' USING (org_id = request_org())', t || '_api_delete', t);
        EXECUTE format('GRANT DELETE ON %I TO geostream_api', t);
    END LOOP;
END
$$;
