#!/bin/sh
# One-shot (admin-tools image): Temporal's two databases and their schemas, created on the first
# run and upgraded to this image's version on every later one. Any failure stops `compose up`.
set -eu
: "${POSTGRES_PWD:?}"
for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir=/etc/temporal/schema/postgresql/v12/temporal/versioned ;;
    *) dir=/etc/temporal/schema/postgresql/v12/visibility/versioned ;;
  esac
  set -- --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" --db "$db"
  temporal-sql-tool "$@" create  # already there: a no-op
  temporal-sql-tool "$@" setup-schema -v 0.0
  temporal-sql-tool "$@" update-schema -d "$dir"
done
echo "Temporal schemas are up to date"
