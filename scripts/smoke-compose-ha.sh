#!/usr/bin/env bash
# Smoke test of the HA compose cluster (docker-compose.ha.yml): bankd node-a
# and node-b on a pg_auto_failover formation (monitor, pg1, pg2), all built
# offline. Two faults, each under bounded load, each followed by a money check:
#
#  1. failover: `docker kill` the primary's container; withdrawals (a new
#     Idempotency-Key each, alternating nodes) must succeed again through
#     both nodes once the standby is promoted; the killed node is started
#     again and must rejoin as the standby.
#  2. partition: `docker network disconnect` node-a from the database network
#     while both nodes withdraw from one account with its lease and node-a
#     holds that lease: node-a must answer 503 (readyz and writes), its lease
#     must run out so that node-b proceeds, and after `docker network connect`
#     node-a must serve again by itself.
#
# Money check per account: balance = opening - the ledger's withdrawals; the
# ledger's idempotency keys are exactly the acknowledged ones (each once);
# no key answered "certainly not applied" (database_unavailable,
# lock_timeout, a 4xx) is in the ledger; answers whose outcome was unknown
# (outcome_unknown, no answer) are settled by a retry with the same key; lease
# entries' fencing tokens never go down. Any 500 fails the run.
#
# Talks only to 127.0.0.1 (the nodes' published ports) and to the containers
# this run creates; always tears the cluster down. Needs curl and jq.
# Environment: HA_DATABASE_URL (bankd's URL, e.g. a single host to see the
# failover check fail), SMOKE_HA_SKIP (failover or partition: skip one part),
# SMOKE_HA_OPS (a file to keep the request log in).
set -euo pipefail
cd "$(dirname "$0")/.."

A=http://127.0.0.1:8091
B=http://127.0.0.1:8092
PROJECT=${COMPOSE_PROJECT_NAME:-lockbank-ha}
NET=${PROJECT}_db
NODE_A_IP="${HA_DB_NET:-10.151.15}.21"
OPENING=1000000

command -v jq >/dev/null || {
	echo "smoke-ha: needs jq" >&2
	exit 1
}
tmp=$(mktemp -d)
ops=$tmp/ops # one line per request: key account amount status code node start_ms took_ms body
: >"$ops"
ha() { scripts/compose-ha.sh "$@"; }
say() { printf '[smoke-ha %s] %s\n' "$(date +%T)" "$*"; }
fail() {
	echo "smoke-ha: FAIL: $*" >&2
	ha state >&2 || true
	ha logs --tail 40 >&2 || true
	exit 1
}
cleanup() {
	touch "$tmp/stop"
	wait 2>/dev/null || true
	[ -z "${SMOKE_HA_OPS:-}" ] || cp "$ops" "$SMOKE_HA_OPS"
	ha down >/dev/null 2>&1 || true
	rm -rf "$tmp"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
node_of() { case "$1" in "$A") echo node-a ;; "$B") echo node-b ;; esac; }

# withdraw URL ACCOUNT AMOUNT KEY STRATEGY [HOLD_MS]: one POST with its own
# Idempotency-Key, logged to $ops; prints the HTTP status (000: no answer).
withdraw() {
	local url=$1 acct=$2 amount=$3 key=$4 strategy=$5 hold=${6:-} body status code t0
	body="{\"amount\":$amount,\"strategy\":\"$strategy\"${hold:+,\"hold_ms\":$hold}}"
	t0=$(now_ms)
	status=$(curl -sS -m 20 -o "$tmp/body.$key" -w '%{http_code}' -X POST "$url/v1/accounts/$acct/withdrawals" \
		-H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$body" 2>/dev/null) || true
	status=${status:-000}
	code=$(jq -r '.code // "-"' "$tmp/body.$key" 2>/dev/null || echo -)
	echo "$key $acct $amount $status ${code:--} $(node_of "$url") $t0 $(($(now_ms) - t0)) $body" >>"$ops"
	echo "$status"
}

create_account() {
	curl -sS -m 10 -X POST "$A/v1/accounts" -H 'Content-Type: application/json' \
		-d "{\"owner\":\"$1\",\"balance\":$OPENING}" | jq -er .id
}

# settle: every request whose outcome is unknown is sent again with the same
# key and body (to node-b, then node-a) until it is answered for certain;
# the last line of a key in $ops is its outcome.
settle() {
	local key acct body url status i
	awk '{last[$1] = $0} END {for (k in last) print last[k]}' "$ops" |
		awk '$4 == "000" || ($4 == 503 && $5 == "outcome_unknown")' >"$tmp/unknown"
	while read -r key acct _ _ _ _ _ _ body; do
		for i in $(seq 20); do
			[ $((i % 2)) = 1 ] && url=$B || url=$A
			status=$(curl -sS -m 20 -o "$tmp/body.$key" -w '%{http_code}' -X POST "$url/v1/accounts/$acct/withdrawals" \
				-H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$body" 2>/dev/null) || true
			echo "$key $acct 0 ${status:-000} $(jq -r '.code // "-"' "$tmp/body.$key" 2>/dev/null || echo -) settle 0 0 $body" >>"$ops"
			case "$status" in 201 | 4??) break ;; esac
			sleep 0.5
		done
		say "settled $key (first answer unknown): now $status"
	done <"$tmp/unknown"
}

# check_money ACCOUNT: see the header.
check_money() {
	local acct=$1 got ledger
	got=$(curl -sS -m 10 "$B/v1/accounts/$acct")
	ledger=$(curl -sS -m 10 "$B/v1/accounts/$acct/ledger?limit=10000")
	local balance opening spent entries
	balance=$(jq -r .balance <<<"$got")
	opening=$(jq -r .opening_balance <<<"$got")
	spent=$(jq '[.entries[] | select(.kind == "withdrawal") | .amount] | add // 0' <<<"$ledger")
	entries=$(jq '.entries | length' <<<"$ledger")
	[ "$balance" = $((opening - spent)) ] || fail "account $acct: balance $balance, opening $opening - ledger $spent"
	local five
	five=$(awk '$4 ~ /^5/ && $4 != 503' "$ops")
	[ -z "$five" ] || fail "answered 5xx other than 503: $five"
	# Outcomes per key (the last line of each), for this account.
	awk -v a="$acct" '$2 == a {last[$1] = $4 " " $5} END {for (k in last) print k, last[k]}' "$ops" | sort >"$tmp/outcomes"
	awk '$2 == 201 {print $1}' "$tmp/outcomes" >"$tmp/acked"
	jq -r '.entries[].idempotency_key // empty' <<<"$ledger" | sort >"$tmp/in-ledger"
	local dup
	dup=$(uniq -d "$tmp/in-ledger")
	[ -z "$dup" ] || fail "account $acct: keys applied twice: $dup"
	if ! diff -q "$tmp/acked" "$tmp/in-ledger" >/dev/null; then
		echo "acknowledged but not in the ledger (lost):" >&2
		comm -23 "$tmp/acked" "$tmp/in-ledger" >&2
		echo "in the ledger but not acknowledged:" >&2
		comm -13 "$tmp/acked" "$tmp/in-ledger" | while read -r k; do grep "^$k " "$tmp/outcomes"; done >&2
		fail "account $acct: the ledger's keys are not the acknowledged ones"
	fi
	local unsettled
	unsettled=$(awk '$2 == "000" || $3 == "outcome_unknown"' "$tmp/outcomes")
	[ -z "$unsettled" ] || fail "account $acct: outcomes still unknown: $unsettled"
	# Lease entries in ledger order: tokens never go down.
	jq -e '[.entries[] | select(.strategy == "lease") | .fence_token] as $t
		| [range(1; $t | length) | select($t[.] < $t[. - 1])] | length == 0' <<<"$ledger" >/dev/null ||
		fail "account $acct: lease fencing tokens go down in the ledger: $(jq -c '[.entries[] | select(.strategy == "lease") | .fence_token]' <<<"$ledger")"
	say "account $acct: balance $balance = $opening - $spent; $entries ledger entries = the $(wc -l <"$tmp/acked") acknowledged keys, none twice; $(awk '$2 != 201' "$tmp/outcomes" | wc -l) refused or not applied, none in the ledger"
}

# wait_readyz URL WANT SECONDS: poll URL/readyz until it answers WANT; prints the ms it took.
wait_readyz() {
	local url=$1 want=$2 deadline=$(($(now_ms) + $3 * 1000)) t0 status
	t0=$(now_ms)
	while :; do
		status=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$url/readyz" 2>/dev/null) || true
		[ "$status" = "$want" ] && break
		[ "$(now_ms)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
	echo $(($(now_ms) - t0))
}

# stats FILTER: "n, median and max of took_ms" over the $ops lines FILTER (awk) selects.
stats() {
	awk "$1"' {print $8}' "$ops" | sort -n | awk '{v[NR] = $1} END {if (NR) printf "%d requests, median %d ms, max %d ms", NR, v[int((NR + 1) / 2)], v[NR]; else printf "no requests"}'
}

t_start=$SECONDS
ha up
say "cluster up in $((SECONDS - t_start)) s"

# --- 1. failover ---------------------------------------------------------------
if [ "${SMOKE_HA_SKIP:-}" != failover ]; then
	X=$(create_account failover)
	[ "$(withdraw "$B" "$X" 100 x-before-b row)" = 201 ] || fail "withdrawal on node-b before the failover"
	[ "$(withdraw "$A" "$X" 100 x-before-a lease)" = 201 ] || fail "withdrawal on node-a before the failover"
	old=$(ha primary)
	case "$old" in pg1) new=pg2 ;; pg2) new=pg1 ;; *) fail "no primary before the failover: '$old'" ;; esac
	say "account $X: two withdrawals; killing the primary $old (its standby is $new)"
	docker kill "$PROJECT-$old" >/dev/null
	T0=$(now_ms)
	first="" ok_a=0 ok_b=0 i=0
	while [ $((($(now_ms) - T0) / 1000)) -lt 60 ] && [ "$i" -lt 400 ]; do
		i=$((i + 1))
		[ $((i % 2)) = 1 ] && url=$A || url=$B
		if [ "$(withdraw "$url" "$X" 1 "x$i" row)" = 201 ]; then
			[ -n "$first" ] || first=$(($(now_ms) - T0))
			[ "$url" = "$A" ] && ok_a=$((ok_a + 1)) || ok_b=$((ok_b + 1))
		fi
		[ "$ok_a" -ge 1 ] && [ "$ok_b" -ge 1 ] && break
		sleep 0.2
	done
	[ -n "$first" ] || fail "no withdrawal succeeded within 60 s of killing the primary ($i tries): no failover"
	[ "$ok_a" -ge 1 ] && [ "$ok_b" -ge 1 ] || fail "after the failover only node-a ($ok_a) or node-b ($ok_b) succeeded"
	now_primary=$(ha primary)
	[ "$now_primary" = "$new" ] || fail "the primary is '$now_primary', want the promoted $new"
	say "failover: first withdrawal succeeded $first ms after the kill; both nodes write to $new; during the switch: $(awk '$1 ~ /^x[0-9]/ && $4 != 201 {n[$4 " " $5]++} END {for (k in n) printf "%s x%d; ", k, n[k]}' "$ops")"
	say "failover: answers during the switch: $(stats '$1 ~ /^x[0-9]/')"
	settle
	check_money "$X"

	t1=$SECONDS
	docker start "$PROJECT-$old" >/dev/null
	ha wait-formation 120 || fail "the old primary $old did not rejoin as standby within 120 s"
	how=pg_rewind
	docker logs "$PROJECT-$old" 2>&1 | grep -q 'Failed to rewind' && how="pg_rewind failed, pg_basebackup"
	say "$old rejoined as standby in $((SECONDS - t1)) s ($how)"
	[ "$(withdraw "$A" "$X" 1 x-after-a row)" = 201 ] && [ "$(withdraw "$B" "$X" 1 x-after-b lease)" = 201 ] ||
		fail "withdrawals after the rejoin"
	check_money "$X"
fi

# --- 2. partition --------------------------------------------------------------
if [ "${SMOKE_HA_SKIP:-}" != partition ]; then
	Y=$(create_account partition)
	Z=$(create_account probes)
	T0=$(now_ms)
	# load PREFIX URL: lease withdrawals of 1 on Y, one at a time; at most 400
	# requests and 60 s, and it stops when $tmp/stop appears.
	load() {
		local n=0 end=$((SECONDS + 60))
		while [ ! -e "$tmp/stop" ] && [ "$SECONDS" -lt "$end" ] && [ "$n" -lt 400 ]; do
			n=$((n + 1))
			withdraw "$2" "$Y" 1 "$1$n" lease >/dev/null
			sleep 0.1
		done
	}
	load ya "$A" &
	load yb "$B" &
	sleep 2 # the load runs for a while before the fault (a duration, not a wait for a condition)
	# node-a takes Y's lease and holds it for 3 s before it writes.
	withdraw "$A" "$Y" 7 y-hold lease 3000 >/dev/null &
	for _ in $(seq 30); do
		[ "$(curl -s -m 2 "$B/v1/locks/account:$Y" | jq -r .holder)" = node-a ] && break
		sleep 0.1
	done
	docker network disconnect "$NET" "$PROJECT-node-a"
	T1=$(now_ms)
	say "node-a disconnected from $NET while holding account $Y's lease"
	ready_503=$(wait_readyz "$A" 503 15) || fail "node-a's /readyz did not answer 503 within 15 s of the partition"
	# Probes while cut off: row withdrawals on the loaded account and on an
	# idle one, and a lease withdrawal on the idle one.
	for n in 1 2 3; do
		withdraw "$A" "$Y" 1 "yp-row$n" row >/dev/null
		withdraw "$A" "$Z" 1 "zp-row$n" row >/dev/null
	done
	withdraw "$A" "$Z" 1 zp-lease lease >/dev/null
	# node-b proceeds once node-a's lease has run out (5 s TTL).
	b_ok=""
	while [ -z "$b_ok" ] && [ $(($(now_ms) - T1)) -lt 20000 ]; do
		b_ok=$(awk -v t="$T1" '$1 ~ /^yb/ && $4 == 201 && $7 + $8 > t + 0 {print $7 + $8 - t; exit}' "$ops")
		sleep 0.2
	done
	[ -n "$b_ok" ] || fail "node-b made no withdrawal on account $Y within 20 s of node-a's partition"
	# Keep node-a cut off for at least 8 s: its lease (5 s TTL) is over by then.
	while [ $(($(now_ms) - T1)) -lt 8000 ]; do sleep 0.2; done
	held=$(curl -s -m 5 "$B/v1/locks" | jq -r '[.locks[] | select(.holder == "node-a")] | length')
	[ "$held" = 0 ] || fail "node-a still holds $held live leases 8 s into its partition"
	T2cut=$(now_ms) # the cut ends somewhere during `docker network connect`
	docker network connect --ip "$NODE_A_IP" "$NET" "$PROJECT-node-a"
	T2=$(now_ms)
	ready_200=$(wait_readyz "$A" 200 30) || fail "node-a's /readyz did not answer 200 within 30 s of the reconnect"
	a_ok=""
	while [ -z "$a_ok" ] && [ $(($(now_ms) - T2)) -lt 20000 ]; do
		a_ok=$(awk -v t="$T2" '$1 ~ /^ya/ && $4 == 201 && $7 > t + 0 {print $7 + $8 - t; exit}' "$ops")
		sleep 0.2
	done
	[ -n "$a_ok" ] || fail "node-a made no withdrawal within 20 s of its reconnect"
	touch "$tmp/stop"
	wait
	rm -f "$tmp/stop"
	part="\$7 >= $T1 && \$7 < $T2cut"
	say "partition: node-a /readyz 503 after $ready_503 ms; node-b's first withdrawal after the cut $b_ok ms; node-a ready $ready_200 ms after the reconnect, first withdrawal $a_ok ms after it"
	say "partition: node-a's writes sent while cut off: $(stats "\$1 ~ /^ya/ && $part"); answers $(awk "\$1 ~ /^ya/ && $part"' {n[$4 " " $5]++} END {for (k in n) printf "%s x%d; ", k, n[k]}' "$ops")"
	say "partition: node-b's writes meanwhile: $(stats "\$1 ~ /^yb/ && $part"); answers $(awk "\$1 ~ /^yb/ && $part"' {n[$4 " " $5]++} END {for (k in n) printf "%s x%d; ", k, n[k]}' "$ops")"
	say "partition: node-a's held withdrawal: $(awk '$1 == "y-hold" {print $4, $5, $8 " ms"}' "$ops")"
	say "partition: probes of node-a while cut off: $(awk '$1 ~ /^[yz]p-/ {printf "%s %s %s %d ms; ", $1, $4, $5, $8}' "$ops")"
	# Nothing fenced wrongly: node-b, the live holder, is never told its lease is stale.
	bad=$(awk '$1 ~ /^yb/ && $4 != 201' "$ops")
	[ -z "$bad" ] || fail "node-b's withdrawals were refused: $bad"
	# node-a cut off: a row withdrawal on an idle account is refused at once
	# (no connection can be made); every probe is a 503.
	slow=$(awk '($1 ~ /^zp-row/ && ($4 != 503 || $8 > 3500)) || ($1 ~ /^[yz]p-/ && $4 != 503)' "$ops")
	[ -z "$slow" ] || fail "node-a, cut off, answered other than a quick 503: $slow"
	settle
	check_money "$Y"
	check_money "$Z"
fi
say "total $((SECONDS - t_start)) s"
echo "smoke-ha: PASS"
