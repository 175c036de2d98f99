-- Dispatcher tokens of the API. As with device tokens (0002), only a SHA-256 hash is stored: the
-- token is printed once by `geostream admin create-dispatcher` and never kept. A token carries
-- 256 random bits, so a plain hash is enough to make the table useless to a thief.
CREATE TABLE dispatcher_tokens (
    token_hash    bytea       PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    token_hint    text        NOT NULL,  -- first characters of the token, to tell tokens apart
    org_id        text        NOT NULL CHECK (org_id <> ''),
    dispatcher_id text        NOT NULL CHECK (dispatcher_id <> ''),
    -- Operators may also act on couriers' privacy rights (export, delete); plain dispatchers
    -- only read.
    is_operator   boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- One live token per dispatcher of an org; revoked ones stay for audit.
CREATE UNIQUE INDEX dispatcher_tokens_live
    ON dispatcher_tokens (org_id, dispatcher_id) WHERE revoked_at IS NULL;

-- The API role may not read the table (it would see every org's dispatchers): it can only ask
-- who a hash it already holds belongs to, through this SECURITY DEFINER function.
REVOKE ALL ON dispatcher_tokens FROM PUBLIC;

CREATE FUNCTION dispatcher_for_token(token_hash bytea)
    RETURNS TABLE (org_id text, dispatcher_id text, is_operator boolean)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
AS $$
    SELECT d.org_id, d.dispatcher_id, d.is_operator
    FROM public.dispatcher_tokens d
    WHERE d.token_hash = dispatcher_for_token.token_hash AND d.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION dispatcher_for_token(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dispatcher_for_token(bytea) TO geostream_api;
