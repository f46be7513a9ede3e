#!/usr/bin/env bash
# Run lockbank's docker-compose cluster on a host with no container registry:
# build whatever image is missing from the host itself, then start PostgreSQL,
# node-a and node-b and wait until both nodes are ready.
#
#   scripts/compose-offline.sh up     build missing images, start, wait for ready
#   scripts/compose-offline.sh down   stop and remove containers and volumes
#   scripts/compose-offline.sh ps|logs [ARGS]   passed to compose
#
# Environment: POSTGRES_IMAGE (default lockbank/postgres:15-offline, built by
# scripts/postgres-image.sh), BANKD_IMAGE (default lockbank/bankd:offline,
# rebuilt on every `up` from the current source).
set -euo pipefail
cd "$(dirname "$0")/.."

export POSTGRES_IMAGE="${POSTGRES_IMAGE:-lockbank/postgres:15-offline}"
export BANKD_IMAGE="${BANKD_IMAGE:-lockbank/bankd:offline}"
export BANKD_DOCKERFILE=Dockerfile.offline
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-lockbank}"
# The classic builder: it needs no BuildKit frontend image from a registry.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

log() { printf '[compose-offline %s] %s\n' "$(date +%T)" "$*"; }

compose() {
	if command -v docker-compose >/dev/null; then
		docker-compose "$@"
	else
		docker compose "$@"
	fi
}

build_images() {
	scripts/postgres-image.sh "$POSTGRES_IMAGE"
	log "building bankd (static, CGO_ENABLED=0) and $BANKD_IMAGE"
	mkdir -p build
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o build/bankd ./cmd/bankd
	docker build -q -f Dockerfile.offline -t "$BANKD_IMAGE" . >/dev/null
}

# wait_ready URL...: every URL's /readyz answers 200 within 120 s, or the
# containers' logs are shown and the script fails.
wait_ready() {
	local deadline=$((SECONDS + 120)) url
	for url in "$@"; do
		until curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				log "$url is not ready after 120 s; the containers say:"
				compose ps || true
				compose logs --tail 60 || true
				return 1
			fi
			sleep 1
		done
		log "$url is ready"
	done
}

case "${1:-}" in
up)
	build_images
	log "starting postgres, node-a, node-b"
	compose up -d --no-build
	wait_ready http://127.0.0.1:8081 http://127.0.0.1:8082
	log "node-a: http://127.0.0.1:8081  node-b: http://127.0.0.1:8082"
	;;
down)
	compose down -v --remove-orphans
	;;
ps | logs)
	compose "$@"
	;;
*)
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
