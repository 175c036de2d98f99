-- Device tokens of the ingest gateway. Only a SHA-256 hash of each token is stored: the token
-- itself is printed once by `geostream admin create-device` and never kept. A token carries
-- 256 random bits, so a plain (unsalted) hash is enough to make the table useless to a thief.
CREATE TABLE device_tokens (
    token_hash  bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    token_hint  text        NOT NULL,  -- first characters of the token, to tell tokens apart
    org_id      text        NOT NULL,
    courier_id  text        NOT NULL,
    device_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One live token per device of an org; revoked ones stay for audit.
CREATE UNIQUE INDEX device_tokens_live_device
    ON device_tokens (org_id, device_id) WHERE revoked_at IS NULL;
CREATE INDEX device_tokens_courier ON device_tokens (org_id, courier_id);
