#!/usr/bin/env bash
# What a lease costs the database, statement by statement (BENCHMARKS.md,
# issue 16): pgbench runs each script of this directory against a private,
# durable PostgreSQL (fsync and synchronous_commit on) that a bankd started
# and migrated, in alternating rounds, and prints each script's transactions
# per second and its ratio to row.sql (the withdrawal statements, 16 clients
# on 10,000 accounts) or to commit.sql (lockmgr's grant, 1 client).
#   bash bench/pgbench/run.sh            # 3 rounds of 8 s per script
#   ROUNDS=5 SECONDS_EACH=10 bash bench/pgbench/run.sh
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
rounds=${ROUNDS:-3} secs=${SECONDS_EACH:-8}
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/lockbank-pgbench-XXXXXX)
chmod 755 "$work"
bankd_pid=
cleanup() {
	if [[ -n $bankd_pid ]]; then
		kill "$bankd_pid" 2>/dev/null || true # bankd stops its PostgreSQL
		wait "$bankd_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$repo" && go build -o "$work/bankd" ./cmd/bankd)
"$work/bankd" --addr 127.0.0.1:0 --data-dir "$work/pgdata" --live=false --prune-interval 1h >"$work/bankd.log" 2>&1 &
bankd_pid=$!
for _ in $(seq 300); do grep -q 'msg="bankd listening"' "$work/bankd.log" && break; sleep 0.1; done
port=$(grep -o 'addr=127.0.0.1:[0-9]*' "$work/bankd.log" | head -1 | cut -d: -f2)
[[ -n $port ]] || { cat "$work/bankd.log" >&2; exit 1; }
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=lockbank PGDATABASE=lockbank
export PGPASSWORD=$(cat "$work/pgdata/lockbank-password")
for _ in $(seq 100); do psql -qAtc "SELECT 1 FROM leases LIMIT 1" >/dev/null 2>&1 && break; sleep 0.2; done

psql -qv ON_ERROR_STOP=1 <<'SQL'
INSERT INTO accounts (owner, balance, opening_balance)
SELECT 'pgbench', 1000000000, 1000000000 FROM generate_series(1, 10000);
-- Every account has had a lease, as in a service that has run a while.
INSERT INTO leases (resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms)
SELECT 'account:' || id, 'vm', nextval('fencing_tokens'), gen_random_uuid(), now(), now(), 5000 FROM accounts;
CREATE TABLE commit_loop (id int PRIMARY KEY, n bigint);
SQL
echo "PostgreSQL $(psql -qAtc 'SHOW server_version'), fsync $(psql -qAtc 'SHOW fsync'), synchronous_commit $(psql -qAtc 'SHOW synchronous_commit'), $(nproc) CPUs"

tps() { # script clients
	"$bin/pgbench" -n -M prepared -c "$2" -j "$2" -T "$secs" -f "$here/$1.sql" 2>&1 |
		awk '/^tps/ {printf "%.0f", $3} /failed|aborted/ && $NF+0 > 0 {print "pgbench: " $0 > "/dev/stderr"}'
}
declare -A sum
pairs="row:16 lease-pipeline:16 lease-statement:16 commit:1 grant:1 grant-no-history:1"
for r in $(seq "$rounds"); do
	line="round $r:"
	for p in $pairs; do
		s=${p%%:*} c=${p##*:}
		v=$(tps "$s" "$c")
		sum[$s]=$(( ${sum[$s]:-0} + v ))
		line+=" $s=$v"
	done
	echo "$line"
done
printf '\n%-18s %8s %10s\n' script clients "mean tx/s"
for p in $pairs; do s=${p%%:*}; printf '%-18s %8s %10d\n' "$s" "${p##*:}" $(( sum[$s] / rounds )); done
awk -v r="${sum[row]}" -v lp="${sum[lease-pipeline]}" -v ls="${sum[lease-statement]}" \
	-v c="${sum[commit]}" -v g="${sum[grant]}" -v gn="${sum[grant-no-history]}" 'BEGIN {
	printf "\nlease-pipeline / row %.2fx, lease-statement / row %.2fx\n", lp / r, ls / r
	printf "grant / commit %.2fx, grant-no-history / commit %.2fx\n", g / c, gn / c }'
