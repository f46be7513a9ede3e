#!/usr/bin/env bash
# Run lockbank's HA compose cluster (docker-compose.ha.yml: a pg_auto_failover
# monitor, data nodes pg1 and pg2, bankd node-a and node-b) on a host with no
# container registry: build whatever image is missing from the host itself,
# start, and wait until the formation has a primary and a secondary and both
# bankd nodes are ready.
#
#   scripts/compose-ha.sh up        build images, start, wait for ready
#   scripts/compose-ha.sh down      stop and remove containers, networks and volumes
#   scripts/compose-ha.sh state     the formation as the monitor sees it (pg_autoctl show state)
#   scripts/compose-ha.sh primary   the service name of the current primary (pg1 or pg2)
#   scripts/compose-ha.sh ps|logs [ARGS]   passed to compose
#
# Environment: PGAF_IMAGE (default lockbank/pgaf:15-offline, built by
# scripts/pgaf-image.sh), BANKD_IMAGE (default lockbank/bankd:offline, rebuilt
# on every `up` from the current source), HA_DATABASE_URL (bankd's URL).
set -euo pipefail
cd "$(dirname "$0")/.."

export PGAF_IMAGE="${PGAF_IMAGE:-lockbank/pgaf:15-offline}"
export BANKD_IMAGE="${BANKD_IMAGE:-lockbank/bankd:offline}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-lockbank-ha}"
export COMPOSE_FILE=docker-compose.ha.yml
# The classic builder: it needs no BuildKit frontend image from a registry.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

log() { printf '[compose-ha %s] %s\n' "$(date +%T)" "$*"; }

compose() {
	if command -v docker-compose >/dev/null; then
		docker-compose "$@"
	else
		docker compose "$@"
	fi
}

# state prints the monitor's view; the monitor container outlives the data nodes.
state() { docker exec "$COMPOSE_PROJECT_NAME-monitor" pg_autoctl show state; }

# primary prints the node the monitor has assigned the primary role (also
# while it is still promoting: wait_primary).
primary() {
	docker exec -u postgres "$COMPOSE_PROJECT_NAME-monitor" psql -qAtX -d pg_auto_failover -c \
		"select nodename from pgautofailover.node where goalstate in ('primary', 'wait_primary', 'single') and reportedstate = goalstate"
}

# wait_formation SECONDS: one primary and one secondary, both reporting what
# the monitor assigned them.
wait_formation() {
	local deadline=$((SECONDS + $1))
	until [ "$(docker exec -u postgres "$COMPOSE_PROJECT_NAME-monitor" psql -qAtX -d pg_auto_failover -c \
		"select string_agg(reportedstate::text, ',' order by reportedstate::text) from pgautofailover.node where reportedstate = goalstate" 2>/dev/null)" = "primary,secondary" ]; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "no primary and secondary after $1 s:"
			state || true
			return 1
		fi
		sleep 1
	done
}

# wait_ready SECONDS URL...: every URL's /readyz answers 200, or fail.
wait_ready() {
	local deadline=$((SECONDS + $1)) url
	shift
	for url in "$@"; do
		until curl -fsS -m 3 -o /dev/null "$url/readyz" 2>/dev/null; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				log "$url is not ready; the containers say:"
				compose ps || true
				compose logs --tail 40 || true
				return 1
			fi
			sleep 1
		done
	done
}

case "${1:-}" in
up)
	scripts/pgaf-image.sh "$PGAF_IMAGE"
	log "building bankd (static, CGO_ENABLED=0) and $BANKD_IMAGE"
	mkdir -p build
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o build/bankd ./cmd/bankd
	docker build -q -f Dockerfile.offline -t "$BANKD_IMAGE" . >/dev/null
	log "starting monitor, pg1, pg2, node-a, node-b"
	if ! compose up -d --no-build; then
		compose ps || true
		docker ps -a --filter "name=$COMPOSE_PROJECT_NAME-" --format '{{.ID}} {{.Names}} {{.Status}}' || true
		compose logs --tail 40 || true
		exit 1
	fi
	wait_formation 120
	wait_ready 120 http://127.0.0.1:8091 http://127.0.0.1:8092
	state
	log "node-a: http://127.0.0.1:8091  node-b: http://127.0.0.1:8092"
	;;
down)
	compose down -v --remove-orphans
	;;
state) state ;;
primary) primary ;;
wait-formation) wait_formation "${2:-120}" ;;
ps | logs)
	compose "$@"
	;;
*)
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
