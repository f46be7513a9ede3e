#!/usr/bin/env bash
# Smoke test of the docker-compose cluster, as a user would try it: bring it up
# offline, create an account on node-a, withdraw on node-b, read it back on
# node-a, then send a withdrawal of the whole balance to both nodes at once
# with the row lock: exactly one may succeed. Always tears the cluster down.
# Talks to the nodes only through their published ports on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

A=http://127.0.0.1:8081
B=http://127.0.0.1:8082
fail() {
	echo "smoke: FAIL: $*" >&2
	scripts/compose-offline.sh logs --tail 80 >&2 || true
	exit 1
}
trap 'scripts/compose-offline.sh down >/dev/null 2>&1 || true' EXIT

scripts/compose-offline.sh up

json() { sed -E "s/.*\"$1\":\"?([^,\"}]*)\"?.*/\1/"; }
post() { curl -sS -X POST "$1" -H 'Content-Type: application/json' -d "$2"; }

acct=$(post "$A/v1/accounts" '{"owner":"smoke","balance":5000}')
id=$(echo "$acct" | json id)
[ -n "$id" ] || fail "create account on node-a: $acct"
echo "created account $id on node-a: $acct"

w=$(post "$B/v1/accounts/$id/withdrawals" '{"amount":1200,"strategy":"row"}')
[ "$(echo "$w" | json balance)" = 3800 ] || fail "withdraw on node-b: $w"
echo "withdrew 1200 on node-b: $w"

got=$(curl -sS "$A/v1/accounts/$id")
[ "$(echo "$got" | json balance)" = 3800 ] || fail "read back on node-a: $got"
echo "node-a reads balance 3800"

# Both nodes at once, the whole balance, with the row lock and a hold that
# makes them overlap: one 201, one 409 insufficient_funds.
tmp=$(mktemp -d)
for n in "$A" "$B"; do
	curl -sS -o "$tmp/$(basename "$n" | tr ':' _).body" -w '%{http_code}\n' -X POST "$n/v1/accounts/$id/withdrawals" \
		-H 'Content-Type: application/json' -d '{"amount":3800,"strategy":"row","hold_ms":500}' >>"$tmp/codes" &
done
wait
codes=$(sort "$tmp/codes" | tr '\n' ' ')
cat "$tmp"/*.body
echo
rm -rf "$tmp"
[ "$codes" = "201 409 " ] || fail "double withdrawal with row: status codes $codes, want exactly one 201 and one 409"
final=$(curl -sS "$B/v1/accounts/$id")
entries=$(curl -sS "$A/v1/accounts/$id/ledger" | grep -o '"kind":"withdrawal"' | wc -l)
[ "$(echo "$final" | json balance)" = 0 ] && [ "$entries" = 2 ] || fail "after the double withdrawal: $final with $entries ledger entries"
echo "double withdrawal of the whole balance on both nodes: $codes-> exactly one succeeded; balance 0, 2 withdrawals in the ledger"
echo "smoke: PASS"
