#!/usr/bin/env bash
# Entrypoint of the pg_auto_failover image built by scripts/pgaf-image.sh:
# one pg_autoctl service per container, as the postgres user (pg_autoctl
# refuses root).
#
#   pgaf-node.sh monitor   the monitor, its health checks tuned for a fast failover
#   pgaf-node.sh node      a data node: the first to register becomes the
#                          primary, the next its synchronous standby
#   pgaf-node.sh CMD ...   anything else is exec'd (e.g. pg_autoctl show state)
#
# Environment:
#   PGDATA           this node's data directory (the image sets it)
#   PGAF_NAME        node name in the formation (default: the container's hostname)
#   PGAF_MONITOR     data nodes: the monitor's URI
#   PGAF_DBNAME      data nodes: the application's database (default lockbank)
#   PGAF_USER        data nodes: the application's role (default lockbank)
#   PGAF_PASSWORD    data nodes: its password (default lockbank)
#   PGAF_PARTITION_TIMEOUT  data nodes: seconds without the monitor and the
#                    standby before a primary demotes itself (keeper's
#                    timeout.network_partition_timeout, default 3; must stay
#                    below the monitor's primary_demote_timeout)
#   PGAF_MONITOR_GUCS  monitor: "name=value ..." set with ALTER SYSTEM at
#                    every start (default: the fast-failover settings below)
#
# Authentication is trust inside the compose network (as in pg_auto_failover's
# own tutorial): the database network is internal, nothing on it is published.
# The application role still gets its password, for a switch to scram-sha-256.
set -Eeuo pipefail

log() { printf '%s [pgaf-node] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*"; }

mode=${1:-node}
case "$mode" in
monitor | node) ;;
*) exec "$@" ;;
esac

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" /var/run/postgresql
	chown -R postgres:postgres "$(dirname "$PGDATA")" /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

# pg_autoctl runs as PID 1 and leaves its pidfile behind when the container
# is killed; started again, it is PID 1 again and would take the stale file
# for a live instance of itself. Nothing else runs pg_autoctl in here.
rm -f "${XDG_RUNTIME_DIR:-/tmp}/pg_autoctl$PGDATA/pg_autoctl.pid"

# The helpers below run in the background and end before long; pg_autoctl,
# as PID 1, reaps them and logs "Unknown subprocess died" (harmless).
name=${PGAF_NAME:-$(hostname)}
host=$(hostname)
cfg="$XDG_CONFIG_HOME/pg_autoctl$PGDATA/pg_autoctl.cfg"

# pgautofailover.* are all reloadable (PGC_SIGHUP). Defaults are 5 s period,
# 5 s timeout, 2 retries 2 s apart, unhealthy after 20 s, demote timeout 30 s
# (51 s from a dead primary to a promoted standby in issue 15's trial).
: "${PGAF_MONITOR_GUCS:=pgautofailover.health_check_period=1000 pgautofailover.health_check_timeout=1000 pgautofailover.health_check_max_retries=1 pgautofailover.health_check_retry_delay=500 pgautofailover.node_considered_unhealthy_timeout=2000 pgautofailover.primary_demote_timeout=5000}"

# tune_monitor waits for the monitor's database, then sets the GUCs and
# reloads; in the background, because `pg_autoctl run` owns the server.
tune_monitor() {
	local i g
	for i in $(seq 120); do
		psql -qAtX -d pg_auto_failover -c 'select 1' >/dev/null 2>&1 && break
		sleep 0.5
	done
	for g in $PGAF_MONITOR_GUCS; do
		psql -qAtX -d pg_auto_failover -c "ALTER SYSTEM SET ${g%%=*} = '${g#*=}'" >/dev/null
	done
	psql -qAtX -d pg_auto_failover -c 'select pg_reload_conf()' >/dev/null
	log "monitor tuned: $PGAF_MONITOR_GUCS"
}

# app_role makes the application's role and database owner, once this node
# is a writable primary (a standby gets them through replication). A short
# checkpoint_timeout: a new standby's pg_basebackup waits for the primary's
# next checkpoint, which may otherwise be minutes away.
app_role() {
	local i
	for i in $(seq 600); do
		if [ "$(psql -qAtX -d postgres -c 'select not pg_is_in_recovery()' 2>/dev/null)" = t ]; then
			psql -qAtX -v ON_ERROR_STOP=1 -d postgres \
				-v user="${PGAF_USER:-lockbank}" -v pass="${PGAF_PASSWORD:-lockbank}" -v db="${PGAF_DBNAME:-lockbank}" <<-'SQL' >/dev/null
				select format('create role %I login password %L', :'user', :'pass')
				 where not exists (select from pg_roles where rolname = :'user') \gexec
				select format('alter database %I owner to %I', :'db', :'user') \gexec
				select format('alter schema public owner to %I', :'user') \gexec
				alter system set checkpoint_timeout = '30s';
				select pg_reload_conf();
			SQL
			log "role ${PGAF_USER:-lockbank} owns database ${PGAF_DBNAME:-lockbank}"
			return
		fi
		sleep 0.5
	done
}

if [ "$mode" = monitor ]; then
	if [ ! -f "$cfg" ]; then
		log "creating the monitor in $PGDATA"
		pg_autoctl create monitor --pgdata "$PGDATA" --pgport 5432 --hostname "$host" \
			--auth trust --no-ssl
	fi
	tune_monitor &
	exec pg_autoctl run --pgdata "$PGDATA"
fi

: "${PGAF_MONITOR:?PGAF_MONITOR must name the monitor, e.g. postgres://autoctl_node@monitor:5432/pg_auto_failover?sslmode=disable}"
if [ ! -f "$cfg" ]; then
	log "creating data node $name in $PGDATA (monitor $PGAF_MONITOR)"
	pg_autoctl create postgres --pgdata "$PGDATA" --pgport 5432 --hostname "$host" --name "$name" \
		--monitor "$PGAF_MONITOR" --auth trust --no-ssl --pg-hba-lan \
		--dbname "${PGAF_DBNAME:-lockbank}" --username "${PGAF_USER:-lockbank}"
	pg_autoctl config set --pgdata "$PGDATA" timeout.network_partition_timeout "${PGAF_PARTITION_TIMEOUT:-3}" >/dev/null
fi
# pg_rewind, which brings a failed primary back as a standby in seconds,
# connects as the replication user to database postgres; pg_autoctl's HBA
# rules name only --dbname, and without this line every rejoin falls back to
# a full pg_basebackup. samenet: the database network (trust, like the rest).
grep -q 'lockbank: pg_rewind' "$PGDATA/pg_hba.conf" ||
	echo 'host postgres pgautofailover_replicator samenet trust # lockbank: pg_rewind' >>"$PGDATA/pg_hba.conf"
app_role &
exec pg_autoctl run --pgdata "$PGDATA"
