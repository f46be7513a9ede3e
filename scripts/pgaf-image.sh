#!/usr/bin/env bash
# Build the pg_auto_failover image of the HA compose file
# (docker-compose.ha.yml) without any container registry: a PostgreSQL 15
# rootfs debootstrapped from the host's Debian mirror with Debian's
# pg_auto_failover packages (scripts/postgres-image.sh with EXTRA_PACKAGES),
# then scripts/pgaf-image/ on top (pgaf-node.sh runs the monitor or a node).
#
# Usage: scripts/pgaf-image.sh [--force] [IMAGE_TAG]
#   IMAGE_TAG  default: $PGAF_IMAGE, else lockbank/pgaf:15-offline
#   --force    debootstrap the base again even if it exists (the top layer,
#              scripts/pgaf-image/, is rebuilt every time: seconds, cached)
set -euo pipefail
cd "$(dirname "$0")/.."

force=""
tag=""
for a in "$@"; do
	case "$a" in
	--force | -f) force=--force ;;
	-h | --help)
		sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) tag=$a ;;
	esac
done
tag=${tag:-${PGAF_IMAGE:-lockbank/pgaf:15-offline}}
base="${tag%%:*}-base:${tag#*:}"
[ "$base" != "$tag" ] || base="$tag-base"

log() { printf '[pgaf-image %s] %s\n' "$(date +%T)" "$*"; }

EXTRA_PACKAGES="postgresql-15-auto-failover pg-auto-failover-cli" \
	scripts/postgres-image.sh $force "$base"

# The classic builder builds FROM a local-only image with no BuildKit
# frontend to pull.
log "building $tag from $base"
DOCKER_BUILDKIT=0 docker build -q --pull=false --build-arg BASE_IMAGE="$base" -t "$tag" scripts/pgaf-image >/dev/null
log "built $tag"
