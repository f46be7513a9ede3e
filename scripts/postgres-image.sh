#!/usr/bin/env bash
# Build a PostgreSQL 15 Docker image from Debian packages, without any
# container registry: the root filesystem is debootstrapped from the host's
# own Debian mirror, imported with `docker import`, and finished with the
# Dockerfile and entrypoint in scripts/postgres-image/.
#
# The resulting image is a stand-in for the official postgres:15 image for
# testcontainers-go's postgres module and docker-compose (POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB, `postgres -c name=value ...`, the
# "ready to accept connections" log line twice on first start, pg_isready).
#
# Usage: scripts/postgres-image.sh [--force] [IMAGE_TAG]
#   IMAGE_TAG  default: $POSTGRES_IMAGE, else lockbank/postgres:15-offline
#   --force    rebuild even if the image already exists
#
# Environment:
#   POSTGRES_IMAGE   image tag when no IMAGE_TAG argument is given
#   DEBIAN_MIRROR    mirror URL for debootstrap (default: read from the host's
#                    APT sources at run time)
#   TMPDIR           where the temporary rootfs is built (default: /var/tmp);
#                    must not be mounted noexec/nodev
#   EXTRA_PACKAGES   more Debian packages to install, space-separated (e.g.
#                    pg_auto_failover's, for scripts/pgaf-image.sh)
#
# Needs root, a Docker daemon and a Debian-family host with apt-get (to
# install debootstrap if it is missing).
set -euo pipefail

readonly SUITE=bookworm
readonly PG_MAJOR=15
readonly DEFAULT_TAG=lockbank/postgres:15-offline

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly context_src="$script_dir/postgres-image"
start_ts=$(date +%s)

log() { printf '[postgres-image %s] %s\n' "$(date '+%H:%M:%S')" "$*"; }
die() {
	printf '[postgres-image] error: %s\n' "$*" >&2
	exit 1
}
usage() {
	cat <<EOF
Usage: ${0##*/} [--force] [IMAGE_TAG]

Build a PostgreSQL $PG_MAJOR image from Debian $SUITE packages (no registry needed).

  IMAGE_TAG  image to build (default: \$POSTGRES_IMAGE, else $DEFAULT_TAG)
  --force    rebuild even if the image already exists

Environment: POSTGRES_IMAGE, DEBIAN_MIRROR (default: from the host's APT
sources), TMPDIR (build area, default /var/tmp).
EOF
}

force=0
tag=""
while [ "$#" -gt 0 ]; do
	case "$1" in
	--force | -f) force=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	-*) die "unknown option: $1 (see --help)" ;;
	*)
		[ -z "$tag" ] || die "only one IMAGE_TAG may be given"
		tag=$1
		;;
	esac
	shift
done
tag=${tag:-${POSTGRES_IMAGE:-$DEFAULT_TAG}}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon"

if [ "$force" -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
	log "image $tag already exists; skipping build (use --force to rebuild)"
	exit 0
fi

# With --force, the image being replaced (removed once the new one is built).
old_id=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || :)

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap needs it)"
for f in Dockerfile docker-entrypoint.sh; do
	[ -f "$context_src/$f" ] || die "missing $context_src/$f"
done

# --- temp dirs and cleanup ---------------------------------------------------

work=""
base_tag=""
cleanup() {
	local rc=$?
	set +e
	if [ -n "$work" ] && [ -d "$work" ]; then
		# debootstrap mounts proc/sys (and possibly binds /dev) inside the
		# rootfs; unmount anything still there before deleting it.
		local mp
		awk -v root="$work/" 'index($2, root) == 1 { print $2 }' /proc/mounts |
			sort -r | while read -r mp; do
			umount "$mp" 2>/dev/null || umount -l "$mp"
		done
		rm -rf --one-file-system "$work"
	fi
	if [ -n "$base_tag" ]; then
		# Only untags: the layer stays, as the parent of the final image.
		docker rmi "$base_tag" >/dev/null 2>&1
	fi
	local elapsed=$(($(date +%s) - start_ts))
	if [ "$rc" -eq 0 ]; then
		log "done in ${elapsed}s"
	else
		log "FAILED (exit $rc) after ${elapsed}s"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "${TMPDIR:-/var/tmp}/postgres-image.XXXXXX")
rootfs="$work/rootfs"
context="$work/context"

# --- debootstrap -------------------------------------------------------------

if ! command -v debootstrap >/dev/null; then
	command -v apt-get >/dev/null || die "debootstrap is missing and apt-get is not available"
	pkgs=(debootstrap)
	[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || pkgs+=(debian-archive-keyring)
	log "installing ${pkgs[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "${pkgs[@]}"; then
		log "install failed; running apt-get update and retrying"
		apt-get update
		apt-get install -y --no-install-recommends "${pkgs[@]}"
	fi
fi

# The first mirror in the host's APT configuration (deb822 first, then the
# one-line format). Prefer an entry that carries $SUITE itself over e.g. the
# security archive.
find_mirror() {
	local f=/etc/apt/sources.list.d/debian.sources uri=""
	if [ -r "$f" ]; then
		uri=$(awk -v suite="$SUITE" '
			function flush() {
				if (uri != "" && enabled && first == "") first = uri
				if (uri != "" && enabled && hit && best == "") best = uri
				uri = ""; hit = 0; enabled = 1
			}
			BEGIN { enabled = 1 }
			/^[[:space:]]*#/ { next }
			/^[[:space:]]*$/ { flush(); next }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
			tolower($1) == "enabled:" && tolower($2) == "no" { enabled = 0 }
			END { flush(); print (best != "" ? best : first) }
		' "$f")
	fi
	if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
		uri=$(awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if (first == "") first = $i
				if ($(i + 1) == suite && best == "") best = $i
			}
			END { print (best != "" ? best : first) }
		' /etc/apt/sources.list)
	fi
	printf '%s\n' "$uri"
}

mirror=${DEBIAN_MIRROR:-$(find_mirror)}
[ -n "$mirror" ] || die "no Debian mirror found in the host's APT sources; set DEBIAN_MIRROR"

# debootstrap downloads with wget; reuse APT's proxy settings if there are any.
if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
	apt_http_proxy=""
	eval "$(apt-config shell apt_http_proxy Acquire::http::Proxy)"
	if [ -n "$apt_http_proxy" ] && [ "$apt_http_proxy" != DIRECT ]; then
		export http_proxy=$apt_http_proxy
	fi
fi

include="postgresql-$PG_MAJOR"
for p in ${EXTRA_PACKAGES:-}; do include="$include,$p"; done
log "debootstrap $SUITE (minbase + $include) from $mirror into $rootfs"
# Two stages, so that a policy-rc.d can be put in place before any package's
# maintainer scripts run: nothing may start a server inside the chroot.
debootstrap --foreign --variant=minbase --include="$include" \
	"$SUITE" "$rootfs" "$mirror"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
log "debootstrap second stage (unpacking and configuring packages)"
if ! chroot "$rootfs" /debootstrap/debootstrap --second-stage; then
	[ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
	die "debootstrap second stage failed"
fi

# --- trim the rootfs ---------------------------------------------------------

log "preparing rootfs"
rm -f "$rootfs/usr/sbin/policy-rc.d"
# postgresql-common's postinst creates a "main" cluster; the entrypoint
# creates its own in $PGDATA.
rm -rf "$rootfs/var/lib/postgresql/$PG_MAJOR" "$rootfs/etc/postgresql/$PG_MAJOR"
mkdir -p "$rootfs/var/lib/postgresql/data" "$rootfs/run/postgresql"
chroot "$rootfs" chown postgres:postgres /var/lib/postgresql /var/lib/postgresql/data /run/postgresql
chmod 1777 "$rootfs/var/lib/postgresql/data"
chmod 3777 "$rootfs/run/postgresql"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
	"$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
	"$rootfs"/var/log/apt/* "$rootfs"/var/log/dpkg.log "$rootfs"/var/log/alternatives.log \
	"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
	"$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.bash_history
# Message translations (~50 MB): the server runs with LANG=C.UTF-8 anyway.
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
# Keep packages installed later (apt-get in a derived image) just as lean.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim-image" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
# Docker provides these at run time; don't bake in the build host's.
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"
[ -x "$rootfs/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ] || die "postgres binary missing from rootfs"
log "rootfs size: $(du -sh --one-file-system "$rootfs" | cut -f1)"

# --- import and build --------------------------------------------------------

base_tag="lockbank/postgres-rootfs:tmp-$$"
log "importing rootfs as $base_tag"
tar -C "$rootfs" --numeric-owner -c . | docker import - "$base_tag" >/dev/null

mkdir -p "$context"
cp "$context_src/Dockerfile" "$context_src/docker-entrypoint.sh" "$context/"
chmod 0755 "$context/docker-entrypoint.sh"

# BuildKit needs the buildx plugin; without it, use the classic builder
# (which can build FROM a local-only image just as well).
if ! docker buildx version >/dev/null 2>&1; then
	export DOCKER_BUILDKIT=0
fi
log "building $tag"
set +e
docker build --pull=false --build-arg BASE_IMAGE="$base_tag" -t "$tag" "$context" 2>&1 |
	grep -v -e '^DEPRECATED: The legacy builder' -e 'BuildKit is currently disabled' \
		-e '^ *environment-variable\.$' -e 'Install the buildx component' \
		-e 'https://docs.docker.com/go/buildx/' -e '^ *$'
build_rc=${PIPESTATUS[0]}
set -e
[ "$build_rc" -eq 0 ] || die "docker build failed (exit $build_rc)"
docker image inspect "$tag" >/dev/null 2>&1 || die "docker build did not produce $tag"

new_id=$(docker image inspect --format '{{.Id}}' "$tag")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
	if docker rmi "$old_id" >/dev/null 2>&1; then
		log "removed the previous $tag image (${old_id#sha256:})"
	else
		log "previous $tag image ${old_id#sha256:} left in place (still in use?)"
	fi
fi

size=$(docker image inspect --format '{{.Size}}' "$tag")
log "built $tag ($((size / 1024 / 1024)) MiB)"
