-- Per-organisation isolation: row-level security on every table of the sink, by org_id.
--
-- Who sees what:
--   * the owner role (migrations, the sink, retention) owns the tables and is not subject to
--     RLS: it writes every org's rows;
--   * geostream_api (the dispatcher API) sees the rows of the org named by the transaction
--     setting geostream.org_id, which it sets per request with set_config(..., true); when the
--     setting is missing or empty the policy matches no row: nothing, never everything;
--   * geostream_analyst members (LOGIN roles made by `geostream admin create-analyst`) see the
--     rows of the org their login role is mapped to in analyst_orgs; they cannot change it.
-- Roles are cluster-wide, so they are created only when missing (another database of the
-- cluster may have made them already).

DO $$
BEGIN
    BEGIN
        CREATE ROLE geostream_api NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE geostream_analyst NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$$;

-- Which org each analyst login role may read. Only the owner reads and writes it.
CREATE TABLE analyst_orgs (
    role_name  name        PRIMARY KEY,
    org_id     text        NOT NULL CHECK (org_id <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON analyst_orgs FROM PUBLIC;

-- The org of the session's login role. SECURITY DEFINER so analysts need no access to the
-- mapping; session_user (the authenticated role, which SET ROLE cannot change) is the key.
CREATE FUNCTION analyst_org() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$ SELECT org_id FROM public.analyst_orgs WHERE role_name = session_user $$;
REVOKE ALL ON FUNCTION analyst_org() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analyst_org() TO geostream_analyst;

-- The org of the API's current request; NULL (no row matches) when none was set.
CREATE FUNCTION request_org() RETURNS text
    LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('geostream.org_id', true), '') $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['positions', 'stops', 'trips', 'courier_events',
                             'latest_positions', 'courier_daily']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO geostream_api'
                       ' USING (org_id = request_org())', t || '_api_org', t);
        EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO geostream_analyst'
                       ' USING (org_id = analyst_org())', t || '_analyst_org', t);
        EXECUTE format('GRANT SELECT ON %I TO geostream_api, geostream_analyst', t);
    END LOOP;
END
$$;
