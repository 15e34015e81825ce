#!/bin/sh
# Runs once, when the PostgreSQL container first creates its database
# (docker-entrypoint-initdb.d): the owner role (POSTGRES_USER) owns the schema
# and runs `varsling migrate`; the service role gets only what migrate grants it.
set -eu
psql -v ON_ERROR_STOP=1 -v service_password="$VARSLING_SERVICE_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE varsling_service LOGIN PASSWORD :'service_password';
ALTER SCHEMA public OWNER TO CURRENT_USER;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
