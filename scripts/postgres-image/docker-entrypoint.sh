#!/usr/bin/env bash
# Entrypoint for the offline PostgreSQL image built by scripts/postgres-image.sh.
#
# A small re-implementation of the official postgres image's entrypoint,
# covering what testcontainers-go's postgres module and docker-compose use:
#
#   POSTGRES_USER               superuser name (default: postgres)
#   POSTGRES_PASSWORD           its password (required unless
#                               POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_DB                 database created on first start (default: $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD   auth method for host connections (default: scram-sha-256)
#   POSTGRES_INITDB_ARGS        extra arguments for initdb
#   PGDATA                      data directory (default: /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz  run once, on first start
#
# Arguments: "postgres [-c name=value ...]" or just "-c name=value ..." start
# the server with those options; anything else is exec'd as a command.
#
# Like the official image, the first start runs a temporary server (socket
# only) to initialise the cluster, so "database system is ready to accept
# connections" is logged twice; later starts log it once.
set -Eeo pipefail # no -u: /docker-entrypoint-initdb.d/*.sh scripts are sourced

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }
die() { log "error: $*" >&2; exit 1; }

# A leading option means "start the server with these options".
if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

# Running as root: fix ownership, then re-exec this script as the postgres user.
if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 00700 "$PGDATA" || :
	chmod 03775 /var/run/postgresql || :
	find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	chown postgres:postgres /var/run/postgresql
	export HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

shift # drop "postgres"; the rest are server options
mkdir -p "$PGDATA" 2>/dev/null || :

run_sql_file() {
	local f=$1
	case "$f" in
	*.sql) psql_init -f "$f" ;;
	*.sql.gz) gzip -dc "$f" | psql_init ;;
	*.sql.xz) xz -dc "$f" | psql_init ;;
	*.sql.zst) zstd -dc "$f" | psql_init ;;
	esac
}

psql_init() {
	psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc \
		--username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	: "${POSTGRES_USER:=postgres}"
	: "${POSTGRES_DB:=$POSTGRES_USER}"
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	: "${POSTGRES_PASSWORD:=}"
	: "${POSTGRES_INITDB_ARGS:=}"

	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		die "database is uninitialized and POSTGRES_PASSWORD is not set;" \
			"set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust to allow" \
			"all connections without a password (never do that outside tests)"
	fi

	log "initializing database cluster in $PGDATA (superuser '$POSTGRES_USER')"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is split on purpose
	if [ -n "$POSTGRES_PASSWORD" ]; then
		initdb --username="$POSTGRES_USER" --auth-local=trust --auth-host=trust \
			--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
	else
		initdb --username="$POSTGRES_USER" --auth-local=trust --auth-host=trust \
			$POSTGRES_INITDB_ARGS
	fi

	# Local (unix socket) connections stay trusted, as in the official image;
	# host connections need a password unless POSTGRES_HOST_AUTH_METHOD says otherwise.
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	{
		printf '\n# added by docker-entrypoint.sh\n'
		printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
	} >>"$PGDATA/pg_hba.conf"

	# Temporary server: unix socket only, so nothing can connect from outside
	# before initialization is complete.
	log "starting temporary server for initialization"
	PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w start \
		-o "$(printf '%q ' "$@" -c listen_addresses='' -p "${PGPORT:-5432}")"

	if [ "$POSTGRES_DB" != 'postgres' ]; then
		log "creating database '$POSTGRES_DB'"
		psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc \
			--username "$POSTGRES_USER" --dbname postgres \
			--set db="$POSTGRES_DB" <<-'EOSQL'
				CREATE DATABASE :"db";
			EOSQL
	fi

	shopt -s nullglob
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			log "running $f"
			if [ -x "$f" ]; then "$f"; else
				# shellcheck disable=SC1090
				. "$f"
			fi
			;;
		*.sql | *.sql.gz | *.sql.xz | *.sql.zst)
			log "running $f"
			run_sql_file "$f"
			;;
		*) log "ignoring $f" ;;
		esac
	done
	shopt -u nullglob

	log "stopping temporary server"
	pg_ctl -D "$PGDATA" -m fast -w stop
	log "initialization complete; starting server"
else
	log "database directory $PGDATA already initialized; skipping initialization"
fi

exec postgres "$@"
