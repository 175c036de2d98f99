#!/bin/sh
# Runs once, as the image's superuser, when the data volume is new: the owner of geostream's
# schema is an ordinary role (migrations, retention and admin commands log in as it), and the
# extensions, which need the superuser, are made here. Services log in as their own roles
# (migration 0014; `geostream db roles` in compose's init gives them their passwords).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner_password="$OWNER_PASSWORD" <<'SQL'
CREATE ROLE geostream LOGIN CREATEROLE NOSUPERUSER PASSWORD :'owner_password';
-- the sink writes every org's rows with COPY, which row-level security would refuse
CREATE ROLE geostream_sink NOLOGIN BYPASSRLS;
ALTER DATABASE geostream OWNER TO geostream;
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
