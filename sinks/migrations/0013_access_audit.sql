-- Who read a courier's personal data, and when (privacy policy 6.1; docs/privacy.md). The API
-- writes one row per read of one courier's track, trips, stops or export, and one per live
-- stream opened (courier_id NULL: the whole org). Rows are kept for the class access_audit.
CREATE TABLE access_audit (
    audit_id   bigserial   PRIMARY KEY,
    org_id     text        NOT NULL CHECK (org_id <> ''),
    courier_id text,
    accessor   text        NOT NULL,  -- the dispatcher token's name
    action     text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX access_audit_courier ON access_audit (org_id, courier_id, at);

ALTER TABLE access_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY access_audit_api_insert ON access_audit FOR INSERT TO geostream_api
    WITH CHECK (org_id = request_org());
CREATE POLICY access_audit_api_read ON access_audit FOR SELECT TO geostream_api
    USING (org_id = request_org());
REVOKE ALL ON access_audit FROM PUBLIC;
GRANT SELECT, INSERT ON access_audit TO geostream_api;
GRANT USAGE ON SEQUENCE access_audit_audit_id_seq TO geostream_api;
