#!/bin/sh
# Applies examples/kitchen/migrations/*.sql in order, each once, each in one transaction.
# Applied versions are recorded in schema_migrations, so running it again (on a branch that was
# created from an already-migrated parent) only applies the new files.
set -eu
# Keep the evidence readable: no "already exists, skipping" notices.
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
dir="${MIGRATIONS_DIR:-$(dirname "$0")/migrations}"
psql -X -q -v ON_ERROR_STOP=1 -d "$DATABASE_URL" \
  -c 'CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())'
for f in "$dir"/*.sql; do
  v=$(basename "$f")
  done_already=$(psql -X -q -A -t -d "$DATABASE_URL" -c "SELECT 1 FROM schema_migrations WHERE version = '$v'")
  if [ -n "$done_already" ]; then
    echo "skip  $v"
    continue
  fi
  psql -X -q -v ON_ERROR_STOP=1 -1 -d "$DATABASE_URL" -f "$f" \
    -c "INSERT INTO schema_migrations (version) VALUES ('$v')"
  echo "apply $v"
done
