#!/bin/sh
# Entrypoint of the gemini-meter image.
#
# No arguments, or only options (e.g. --workers 4): apply the database migrations, then serve on
# 0.0.0.0 with those options. Anything else runs as a command, e.g.
#   docker compose run --rm proxy gemini-meter tenants create team-a
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

# The database may still be starting (first `docker compose up`): retry the migration a while.
attempts="${GEMINI_METER_MIGRATE_ATTEMPTS:-15}"
n=1
until gemini-meter db upgrade; do
    if [ "$n" -ge "$attempts" ]; then
        echo "docker-entrypoint: database migration failed $n times; giving up" >&2
        exit 1
    fi
    echo "docker-entrypoint: migration attempt $n failed; retrying in 2 s" >&2
    n=$((n + 1))
    sleep 2
done

exec gemini-meter serve --host "${GEMINI_METER_HOST:-0.0.0.0}" "$@"
