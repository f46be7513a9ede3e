package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/wait"
)

func (b bundle) lock(t *testing.T, resource, body string) response {
	t.Helper()
	return b.do(t, request{"POST", "/v1/locks/" + resource, nil, body})
}

func leaseOf(t *testing.T, r response) (token int64, leaseID string) {
	t.Helper()
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		t.Fatalf("lock: %d %s", r.status, r.body)
	}
	m := r.json(t)
	return int64(m["token"].(float64)), m["lease_id"].(string)
}

func TestLockAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})

	r := b.lock(t, "printer:1", `{"holder":"node-a","ttl_ms":60000}`)
	if got, want := keys(r.json(t)), "acquired_at,expires_at,holder,lease_id,resource,token,ttl_ms"; r.status != 201 || got != want {
		t.Fatalf("acquire: %d %s", r.status, r.body)
	}
	tokenA, idA := leaseOf(t, r)

	r = b.lock(t, "printer:1", `{"holder":"node-b","ttl_ms":1000}`)
	p := r.json(t)
	if r.status != 409 || p["code"] != "lock_held" || p["holder"] != "node-a" || p["expires_at"] == nil || r.header.Get("Retry-After") == "" {
		t.Fatalf("acquire while held: %d %s (Retry-After %q)", r.status, r.body, r.header.Get("Retry-After"))
	}

	r = b.do(t, request{"GET", "/v1/locks/printer:1", nil, ``})
	st := r.json(t)
	if got, want := keys(st), "expires_at,held,holder,resource,token,ttl_remaining_ms"; r.status != 200 || got != want || st["held"] != true || strings.Contains(string(r.body), idA) {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	r = b.do(t, request{"GET", "/v1/locks", nil, ``})
	if r.status != 200 || len(r.json(t)["locks"].([]any)) != 1 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}

	r = b.do(t, request{"PUT", "/v1/locks/printer:1", nil, `{"lease_id":"` + idA + `","ttl_ms":30000}`})
	if token, _ := leaseOf(t, r); r.status != 200 || token != tokenA {
		t.Fatalf("renew: %d %s; want 200 with the same token", r.status, r.body)
	}

	for i := range 2 { // releasing twice is harmless
		if r := b.do(t, request{"DELETE", "/v1/locks/printer:1", map[string]string{"Lease-Id": idA}, ``}); r.status != 204 {
			t.Fatalf("release #%d: %d %s", i+1, r.status, r.body)
		}
	}
	tokenB, idB := leaseOf(t, b.lock(t, "printer:1", `{"holder":"node-b","ttl_ms":60000}`))
	if tokenB <= tokenA {
		t.Fatalf("token %d after %d", tokenB, tokenA)
	}
	if r := b.do(t, request{"DELETE", "/v1/locks/printer:1", map[string]string{"Lease-Id": idA}, ``}); r.status != 409 || r.json(t)["code"] != "not_holder" {
		t.Fatalf("stale release: %d %s", r.status, r.body)
	}
	if r := b.do(t, request{"PUT", "/v1/locks/printer:1", nil, `{"lease_id":"` + idA + `","ttl_ms":1000}`}); r.status != 409 || r.json(t)["code"] != "lease_lost" {
		t.Fatalf("stale renew: %d %s", r.status, r.body)
	}
	if r := b.do(t, request{"GET", "/v1/locks/printer:1", nil, ``}); r.json(t)["holder"] != "node-b" {
		t.Fatalf("node-b's lease was touched: %s", r.body)
	}

	// A waiter is granted the lock when the holder releases: once it is
	// registered in the database as waiting, the release must wake it (its
	// wait of 10 s is far shorter than node-b's 60 s lease).
	type answer struct {
		r   response
		err error
	}
	done := make(chan answer, 1)
	go func() {
		r, err := b.send(request{"POST", "/v1/locks/printer:1", nil, `{"holder":"node-c","ttl_ms":1000,"wait_ms":10000}`})
		done <- answer{r, err}
	}()
	wait.Until(t, 10*time.Second, "the waiter to register", func() bool {
		var waiting bool
		err := b.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND classid = 1818979687 AND objid::int = hashtext('printer:1'))`).Scan(&waiting)
		return err == nil && waiting
	})
	b.do(t, request{"DELETE", "/v1/locks/printer:1", map[string]string{"Lease-Id": idB}, ``})
	if a := <-done; a.err != nil || a.r.status != 201 || a.r.json(t)["holder"] != "node-c" {
		t.Fatalf("waiter: %v %d %s", a.err, a.r.status, a.r.body)
	}
	// One that waits in vain is told who holds it.
	r = b.lock(t, "printer:1", `{"holder":"node-d","ttl_ms":1000,"wait_ms":200}`)
	if r.status != 409 || r.json(t)["holder"] != "node-c" {
		t.Fatalf("waiter that timed out: %d %s", r.status, r.body)
	}
}

func TestLockAPIBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	_, id := leaseOf(t, b.lock(t, "res", `{"holder":"node-a","ttl_ms":60000}`))
	tests := []struct {
		name string
		req  request
		want int
		code string
	}{
		{"ResourceWithSpace", request{"POST", "/v1/locks/a%20b", nil, `{"holder":"h","ttl_ms":1000}`}, 422, "invalid_request"},
		{"ResourceTooLong", request{"POST", "/v1/locks/" + strings.Repeat("r", 201), nil, `{"holder":"h","ttl_ms":1000}`}, 422, "invalid_request"},
		{"ResourceBadChar", request{"GET", "/v1/locks/a$b", nil, ``}, 422, "invalid_request"},
		{"EmptyHolder", request{"POST", "/v1/locks/x", nil, `{"holder":"","ttl_ms":1000}`}, 422, "invalid_request"},
		{"LongHolder", request{"POST", "/v1/locks/x", nil, `{"holder":"` + strings.Repeat("h", 101) + `","ttl_ms":1000}`}, 422, "invalid_request"},
		{"TTLTooShort", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":99}`}, 422, "invalid_request"},
		{"TTLTooLong", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":600001}`}, 422, "invalid_request"},
		{"TTLMissing", request{"POST", "/v1/locks/x", nil, `{"holder":"h"}`}, 422, "invalid_request"},
		{"TTLHuge", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":9223372036854775807}`}, 422, "invalid_request"},
		{"TTLString", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":"1000"}`}, 422, "invalid_request"},
		{"WaitNegative", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"wait_ms":-1}`}, 422, "invalid_request"},
		{"WaitTooLong", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"wait_ms":60001}`}, 422, "invalid_request"},
		{"UnknownField", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"token":5}`}, 400, "unknown_field"},
		{"RenewMalformedID", request{"PUT", "/v1/locks/res", nil, `{"lease_id":"nope","ttl_ms":1000}`}, 400, "invalid_lease_id"},
		{"RenewUnknownID", request{"PUT", "/v1/locks/res", nil, `{"lease_id":"00000000-0000-4000-8000-000000000000","ttl_ms":1000}`}, 409, "lease_lost"},
		{"RenewOtherResource", request{"PUT", "/v1/locks/other", nil, `{"lease_id":"` + id + `","ttl_ms":1000}`}, 409, "lease_lost"},
		{"RenewBadTTL", request{"PUT", "/v1/locks/res", nil, `{"lease_id":"` + id + `","ttl_ms":5}`}, 422, "invalid_request"},
		{"ReleaseMissingID", request{"DELETE", "/v1/locks/res", nil, ``}, 400, "invalid_lease_id"},
		{"ReleaseMalformedID", request{"DELETE", "/v1/locks/res", map[string]string{"Lease-Id": "123"}, ``}, 400, "invalid_lease_id"},
		{"ReleaseUnknownID", request{"DELETE", "/v1/locks/res", map[string]string{"Lease-Id": "00000000-0000-4000-8000-000000000000"}, ``}, 409, "not_holder"},
		{"ReleaseOnOtherResource", request{"DELETE", "/v1/locks/other", map[string]string{"Lease-Id": id}, ``}, 409, "not_holder"},
		{"GetUnknown", request{"GET", "/v1/locks/never", nil, ``}, 404, "lock_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.req)
			if r.status != tt.want || r.header.Get("Content-Type") != "application/problem+json" || r.json(t)["code"] != tt.code {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tt.want, tt.code)
			}
		})
	}
	r := b.do(t, request{"GET", "/v1/locks/res", nil, ``})
	if st := r.json(t); st["held"] != true || st["holder"] != "node-a" || st["ttl_remaining_ms"].(float64) < 50_000 {
		t.Fatalf("the lease changed after bad requests: %s", r.body)
	}
	r = b.do(t, request{"GET", "/v1/locks", nil, ``})
	if n := len(r.json(t)["locks"].([]any)); n != 1 {
		t.Fatalf("%d live locks after bad requests, want 1", n)
	}
}

// TestPausedNodeStoryOverHTTP is the README's curl walkthrough: node-a takes
// the lock with a short TTL and goes quiet; node-b takes it (higher token)
// and withdraws with its token; node-a's late withdrawal with its old token
// is refused, and only node-b's withdrawal is in the ledger.
func TestPausedNodeStoryOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	id := strconv.FormatInt(b.createAccount(t, 5000), 10)
	resource := "account:" + id

	tokenA, _ := leaseOf(t, b.lock(t, resource, `{"holder":"node-a","ttl_ms":300}`))
	time.Sleep(400 * time.Millisecond) // node-a is paused past its lease
	tokenB, _ := leaseOf(t, b.lock(t, resource, `{"holder":"node-b","ttl_ms":60000}`))
	if tokenB <= tokenA {
		t.Fatalf("node-b's token %d is not above node-a's %d", tokenB, tokenA)
	}
	withdraw := func(token int64) response {
		return b.do(t, request{"POST", "/v1/accounts/" + id + "/withdrawals", map[string]string{"Fencing-Token": strconv.FormatInt(token, 10)}, `{"amount":1000}`})
	}
	if r := withdraw(tokenB); r.status != 201 || int64(r.json(t)["fence_token"].(float64)) != tokenB {
		t.Fatalf("node-b: %d %s", r.status, r.body)
	}
	if r := withdraw(tokenA); r.status != 409 || r.json(t)["code"] != "stale_fencing_token" {
		t.Fatalf("node-a's late write: %d %s", r.status, r.body)
	}
	r := b.do(t, request{"GET", "/v1/accounts/" + id + "/ledger", nil, ``})
	var ledger struct{ Entries []account.Entry }
	_ = json.Unmarshal(r.body, &ledger)
	if len(ledger.Entries) != 1 || *ledger.Entries[0].FenceToken != tokenB {
		t.Fatalf("ledger %s: want node-b's withdrawal only", r.body)
	}
	if acct := b.do(t, request{"GET", "/v1/accounts/" + id, nil, ``}).json(t); acct["balance"].(float64) != 4000 || int64(acct["fence_token"].(float64)) != tokenB {
		t.Fatalf("account %v", acct)
	}
}

func TestFencingTokenHeader(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	id := strconv.FormatInt(b.createAccount(t, 1000), 10)
	otherID := strconv.FormatInt(b.createAccount(t, 1000), 10)
	otherToken, _ := leaseOf(t, b.lock(t, "account:"+otherID, `{"holder":"x","ttl_ms":60000}`))
	token, leaseID := leaseOf(t, b.lock(t, "account:"+id, `{"holder":"x","ttl_ms":60000}`))
	tok := func(v string) map[string]string { return map[string]string{"Fencing-Token": v} }
	path := "/v1/accounts/" + id
	tests := []struct {
		name string
		req  request
		want int
		code string
	}{
		{"NotANumber", request{"POST", path + "/deposits", tok("abc"), `{"amount":1}`}, 400, "invalid_fencing_token"},
		{"Zero", request{"POST", path + "/deposits", tok("0"), `{"amount":1}`}, 400, "invalid_fencing_token"},
		{"Negative", request{"POST", path + "/withdrawals", tok("-3"), `{"amount":1}`}, 400, "invalid_fencing_token"},
		{"Empty", request{"POST", path + "/withdrawals", tok(""), `{"amount":1}`}, 400, "invalid_fencing_token"},
		{"TooBig", request{"POST", path + "/withdrawals", tok("99999999999999999999"), `{"amount":1}`}, 400, "invalid_fencing_token"},
		{"OtherAccountsToken", request{"POST", path + "/withdrawals", tok(strconv.FormatInt(otherToken, 10)), `{"amount":1}`}, 409, "fencing_token_mismatch"},
		{"WithLeaseStrategy", request{"POST", path + "/withdrawals", tok(strconv.FormatInt(token, 10)), `{"amount":1,"strategy":"lease"}`}, 422, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.req)
			if r.status != tt.want || r.json(t)["code"] != tt.code {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tt.want, tt.code)
			}
		})
	}
	b.do(t, request{"DELETE", "/v1/locks/account:" + id, map[string]string{"Lease-Id": leaseID}, ``})
	if r := b.do(t, request{"POST", path + "/deposits", tok(strconv.FormatInt(token, 10)), `{"amount":1}`}); r.status != 409 || r.json(t)["code"] != "lease_expired" {
		t.Fatalf("released lease's token: %d %s", r.status, r.body)
	}
	if acct := b.do(t, request{"GET", path, nil, ``}).json(t); acct["balance"].(float64) != 1000 {
		t.Fatalf("balance changed: %v", acct)
	}
}

func TestLeaseStrategyOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{LeaseWait: 300 * time.Millisecond})
	id := strconv.FormatInt(b.createAccount(t, 1000), 10)
	r := b.do(t, request{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":100,"strategy":"lease"}`})
	if r.status != 201 || r.json(t)["strategy"] != "lease" || r.json(t)["fence_token"] == nil {
		t.Fatalf("lease withdrawal: %d %s", r.status, r.body)
	}
	// While someone else holds the account's lock, a lease withdrawal waits
	// --lease-wait, then answers 503 lock_timeout with Retry-After.
	b.lock(t, "account:"+id, `{"holder":"someone","ttl_ms":60000}`)
	r = b.do(t, request{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":100,"strategy":"lease"}`})
	if r.status != 503 || r.json(t)["code"] != "lock_timeout" || r.header.Get("Retry-After") == "" {
		t.Fatalf("blocked lease withdrawal: %d %s", r.status, r.body)
	}
	if r := b.do(t, request{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":100,"strategy":"lease-nofence"}`}); r.status != 403 || r.json(t)["code"] != "unsafe_disabled" {
		t.Fatalf("lease-nofence outside demo mode: %d %s", r.status, r.body)
	}
}
