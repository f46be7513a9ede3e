#!/usr/bin/env bash
# The lock-manager benchmarks, from a fresh machine to a table (see the
# "Lock managers" section of BENCHMARKS.md). It installs redis-server if it is
# missing, starts one on 127.0.0.1 (a free port, no persistence), runs
# lockbench, which starts and stops its own private PostgreSQL, and on exit,
# failure or signal included, stops both. Arguments go to lockbench, e.g.
#   bash bench/run.sh -duration 5s
# Results: $LOCKBENCH_OUT (default bench/results)/results.json.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${LOCKBENCH_OUT:-$here/results}
work=$(mktemp -d /tmp/lockbench-run-XXXXXX)
chmod 755 "$work" # PostgreSQL runs as the postgres OS user when we are root
redis_pid= bench_pid=

cleanup() {
	if [[ -n $bench_pid ]]; then
		kill "$bench_pid" 2>/dev/null || true # timeout passes it on to lockbench
		wait "$bench_pid" 2>/dev/null || true
	fi
	if [[ -n $redis_pid ]]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	# lockbench stops its PostgreSQL itself; this is for when it was killed.
	if [[ -f $work/pg/data/postmaster.pid ]]; then
		kill -INT "$(head -1 "$work/pg/data/postmaster.pid")" 2>/dev/null || true
		for _ in $(seq 50); do [[ -f $work/pg/data/postmaster.pid ]] || break; sleep 0.2; done
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # so that the EXIT trap runs on signals too

if ! command -v redis-server >/dev/null; then
	echo "installing redis-server" >&2
	export DEBIAN_FRONTEND=noninteractive
	timeout 120 apt-get update -qq
	timeout 180 apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

# A free port: one that nobody answers on.
for _ in $(seq 50); do
	port=$((20000 + RANDOM % 40000))
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --save '' --appendonly no \
	--dir "$work" --daemonize no --loglevel warning >"$work/redis.log" 2>&1 &
redis_pid=$!
for i in $(seq 50); do
	redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
	if ! kill -0 "$redis_pid" 2>/dev/null || ((i == 50)); then
		echo "redis-server did not answer on 127.0.0.1:$port:" >&2
		tail -5 "$work/redis.log" >&2
		exit 1
	fi
	sleep 0.2
done
echo "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$port" >&2

(cd "$here" && timeout 180 go build -o "$work/lockbench" ./cmd/lockbench)
# In the background, so that a signal to this script is handled at once.
timeout 200 "$work/lockbench" -redis "127.0.0.1:$port" -pgdir "$work/pg" -out "$out" "$@" &
bench_pid=$!
wait "$bench_pid"
bench_pid=
