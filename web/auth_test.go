package web_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

// lockedBuffer collects the server's log lines from its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// keyed is a server with API keys: alice and bob are clients, ops an admin.
type keyed struct {
	bundle
	alice, bob, ops string // the secrets
	logs            *lockedBuffer
}

// setupKeys serves the real handler with three keys, logging everything
// (debug level) into logs.
func setupKeys(t *testing.T) keyed {
	t.Helper()
	var lines []string
	secret := func(name string, role apikey.Role) string {
		s, line, err := apikey.New(name, role)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, line)
		return s
	}
	k := keyed{alice: secret("alice", apikey.RoleClient), bob: secret("bob", apikey.RoleClient), ops: secret("ops", apikey.RoleAdmin), logs: &lockedBuffer{}}
	keys, err := apikey.Parse(strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.New(t)
	logger := slog.New(slog.NewTextHandler(k.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	srv := httptest.NewServer(contract.Check(t)(web.NewServer(logger, "node-t", account.NewService(pool, account.Options{Locks: locks}), locks, keys, pool.Ping, nil)))
	t.Cleanup(srv.Close)
	k.bundle = bundle{pool: pool, url: srv.URL}
	return k
}

// as sends req with secret as its Bearer key.
func (k keyed) as(t *testing.T, secret string, req request) response {
	t.Helper()
	h := map[string]string{"Authorization": "Bearer " + secret}
	for name, v := range req.header {
		h[name] = v
	}
	req.header = h
	return k.do(t, req)
}

func (k keyed) createAccount(t *testing.T, secret string, balance int64) string {
	t.Helper()
	r := k.as(t, secret, request{"POST", "/v1/accounts", nil, `{"owner":"someone","balance":` + strconv.FormatInt(balance, 10) + `}`})
	if r.status != http.StatusCreated {
		t.Fatalf("create account: %d %s", r.status, r.body)
	}
	return strconv.FormatInt(int64(r.json(t)["id"].(float64)), 10)
}

// TestUnauthenticated: with keys, every /v1 request without a good key is
// refused with 401 unauthenticated, a WWW-Authenticate challenge and one
// body whatever was wrong — and changes nothing; /healthz, /readyz and /openapi.yaml stay
// open.
func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	k := setupKeys(t)
	stranger, _, err := apikey.New("alice", apikey.RoleAdmin) // well formed, in no file
	if err != nil {
		t.Fatal(err)
	}
	credentials := []struct {
		name   string
		header []string // the Authorization headers sent
	}{
		{"NoHeader", nil},
		{"Empty", []string{""}},
		{"SchemeOnly", []string{"Bearer"}},
		{"SchemeAndSpace", []string{"Bearer "}},
		{"UnknownKey", []string{"Bearer " + stranger}},
		{"KeyWithoutScheme", []string{k.alice}},
		{"BasicScheme", []string{"Basic " + k.alice}},
		{"KeyPlusOne", []string{"Bearer " + k.alice + "x"}},
		{"KeyLessOne", []string{"Bearer " + k.alice[:len(k.alice)-1]}},
		{"HashInsteadOfKey", []string{"Bearer sha256:" + strings.Repeat("0", 64)}},
		{"TwoHeaders", []string{"Bearer " + k.alice, "Bearer " + k.alice}},
	}
	endpoints := []request{
		{"POST", "/v1/accounts", nil, `{"owner":"mallory","balance":1}`},
		{"GET", "/v1/accounts/1", nil, ``},
		{"POST", "/v1/accounts/1/withdrawals", nil, `{"amount":1}`},
		{"GET", "/v1/accounts/1/ledger", nil, ``},
		{"GET", "/v1/locks", nil, ``},
		{"POST", "/v1/locks/printer", nil, `{"holder":"m","ttl_ms":60000}`},
		{"GET", "/v1/locks/printer", nil, ``},
		{"GET", "/v1/no-such-route", nil, ``},
		{"PATCH", "/v1/accounts", nil, ``},
	}
	var first []byte
	for _, c := range credentials {
		for _, e := range endpoints {
			t.Run(c.name+"/"+e.method+e.path, func(t *testing.T) {
				req, err := http.NewRequest(e.method, k.url+e.path, strings.NewReader(e.body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				for _, v := range c.header {
					req.Header.Add("Authorization", v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				r := response{status: resp.StatusCode, header: resp.Header, body: body}
				if r.status != 401 || r.header.Get("Content-Type") != "application/problem+json" || r.json(t)["code"] != "unauthenticated" {
					t.Fatalf("%d %s, want 401 unauthenticated", r.status, r.body)
				}
				if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="lockbank"` {
					t.Fatalf("WWW-Authenticate %q", got)
				}
				if first == nil {
					first = body
				} else if !bytes.Equal(body, first) {
					t.Fatalf("body %s differs from %s: it hints at what was wrong", body, first)
				}
			})
		}
	}
	var accounts, leases int
	if err := k.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM leases)`).Scan(&accounts, &leases); err != nil || accounts != 0 || leases != 0 {
		t.Fatalf("%d accounts, %d leases after refused requests (%v), want none", accounts, leases, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
		if r := k.do(t, request{"GET", path, nil, ``}); r.status != 200 {
			t.Fatalf("%s without a key: %d %s", path, r.status, r.body)
		}
	}
	// The scheme's case does not matter (RFC 9110).
	if r := k.do(t, request{"GET", "/v1/locks", map[string]string{"Authorization": "bearer " + k.alice}, ``}); r.status != 200 {
		t.Fatalf("lower-case scheme: %d %s", r.status, r.body)
	}
}

// TestClientKeysOwnTheirAccounts is invariant 13 for accounts: bob's client
// key cannot read, deposit to, withdraw from or list the ledger of alice's
// account — each answer is word for word a missing account's — and nothing
// changes; alice can, and so can the admin key. An account opened with keys
// off belongs to no client key.
func TestClientKeysOwnTheirAccounts(t *testing.T) {
	t.Parallel()
	k := setupKeys(t)
	a := k.createAccount(t, k.alice, 1000)
	k.createAccount(t, k.bob, 1000)
	const missing = "999999"
	var keysOff string
	if err := k.pool.QueryRow(context.Background(), `INSERT INTO accounts (owner, balance, opening_balance) VALUES ('old', 5, 5) RETURNING id::text`).Scan(&keysOff); err != nil {
		t.Fatal(err)
	}
	requests := []struct {
		name string
		req  func(id string) request
	}{
		{"Get", func(id string) request { return request{"GET", "/v1/accounts/" + id, nil, ``} }},
		{"Deposit", func(id string) request {
			return request{"POST", "/v1/accounts/" + id + "/deposits", nil, `{"amount":10}`}
		}},
		{"Withdraw", func(id string) request {
			return request{"POST", "/v1/accounts/" + id + "/withdrawals", map[string]string{"Idempotency-Key": "k1"}, `{"amount":600}`}
		}},
		{"WithdrawLease", func(id string) request {
			return request{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":600,"strategy":"lease"}`}
		}},
		{"Ledger", func(id string) request { return request{"GET", "/v1/accounts/" + id + "/ledger", nil, ``} }},
		// Bad input is judged before the account, for every account alike.
		{"BadBody", func(id string) request {
			return request{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":0}`}
		}},
		{"BadLimit", func(id string) request { return request{"GET", "/v1/accounts/" + id + "/ledger?limit=0", nil, ``} }},
	}
	for _, tt := range requests {
		t.Run("Bob/"+tt.name, func(t *testing.T) {
			want := k.as(t, k.bob, tt.req(missing))
			for _, id := range []string{a, keysOff} {
				got := k.as(t, k.bob, tt.req(id))
				wantBody := strings.ReplaceAll(string(want.body), missing, id)
				if got.status != want.status || string(got.body) != wantBody || got.header.Get("Content-Type") != want.header.Get("Content-Type") {
					t.Fatalf("bob on account %s: %d %s\nwant what a missing account gets: %d %s", id, got.status, got.body, want.status, wantBody)
				}
			}
		})
	}
	// Nothing bob sent changed alice's account.
	r := k.as(t, k.ops, request{"GET", "/v1/accounts/" + a + "/ledger", nil, ``})
	if n := len(r.json(t)["entries"].([]any)); r.status != 200 || n != 0 {
		t.Fatalf("alice's ledger after bob's tries: %d %s", r.status, r.body)
	}

	for _, who := range []struct{ name, secret string }{{"Alice", k.alice}, {"Admin", k.ops}} {
		t.Run(who.name, func(t *testing.T) {
			if r := k.as(t, who.secret, request{"GET", "/v1/accounts/" + a, nil, ``}); r.status != 200 {
				t.Fatalf("get: %d %s", r.status, r.body)
			}
			if r := k.as(t, who.secret, request{"POST", "/v1/accounts/" + a + "/withdrawals", nil, `{"amount":100}`}); r.status != 201 {
				t.Fatalf("withdraw: %d %s", r.status, r.body)
			}
			if r := k.as(t, who.secret, request{"POST", "/v1/accounts/" + a + "/deposits", nil, `{"amount":50}`}); r.status != 201 {
				t.Fatalf("deposit: %d %s", r.status, r.body)
			}
			if r := k.as(t, who.secret, request{"GET", "/v1/accounts/" + a + "/ledger", nil, ``}); r.status != 200 {
				t.Fatalf("ledger: %d %s", r.status, r.body)
			}
		})
	}
	if r := k.as(t, k.ops, request{"GET", "/v1/accounts/" + a, nil, ``}); r.json(t)["balance"].(float64) != 900 {
		t.Fatalf("alice's account: %s, want balance 900", r.body)
	}
	if r := k.as(t, k.alice, request{"GET", "/v1/accounts/" + keysOff, nil, ``}); r.status != 404 {
		t.Fatalf("alice on an account opened with keys off: %d %s", r.status, r.body)
	}
	if r := k.as(t, k.ops, request{"GET", "/v1/accounts/" + keysOff, nil, ``}); r.status != 200 {
		t.Fatalf("admin on an account opened with keys off: %d %s", r.status, r.body)
	}
}

// TestLeasesBelongToTheirKey is invariant 13 for leases: bob — or even the
// admin key — cannot renew or release alice's lease with its lease id; each
// gets exactly the answer a wrong lease id gets, and the lease is untouched.
// Everyone sees that the lock is held, never by which key. A client key
// cannot take the lease of another's account.
func TestLeasesBelongToTheirKey(t *testing.T) {
	t.Parallel()
	k := setupKeys(t)
	r := k.as(t, k.alice, request{"POST", "/v1/locks/printer:1", nil, `{"holder":"worker-a","ttl_ms":60000}`})
	token, leaseID := leaseOf(t, r)
	if r.json(t)["owner"] != "alice" {
		t.Fatalf("grant: %s, want owner alice", r.body)
	}
	const wrongID = "00000000-0000-4000-8000-000000000000"
	renew := func(id string) request {
		return request{"PUT", "/v1/locks/printer:1", nil, `{"lease_id":"` + id + `","ttl_ms":1000}`}
	}
	release := func(id string) request {
		return request{"DELETE", "/v1/locks/printer:1", map[string]string{"Lease-Id": id}, ``}
	}
	for _, other := range []struct{ name, secret string }{{"Bob", k.bob}, {"Admin", k.ops}} {
		t.Run(other.name, func(t *testing.T) {
			for _, op := range []struct {
				name string
				req  func(string) request
				code string
			}{{"Renew", renew, "lease_lost"}, {"Release", release, "not_holder"}} {
				want := k.as(t, other.secret, op.req(wrongID))
				got := k.as(t, other.secret, op.req(leaseID))
				if got.status != 409 || got.json(t)["code"] != op.code || !bytes.Equal(got.body, want.body) {
					t.Fatalf("%s of alice's lease: %d %s\nwant what a wrong lease id gets: %d %s", op.name, got.status, got.body, want.status, want.body)
				}
			}
			st := k.as(t, other.secret, request{"GET", "/v1/locks/printer:1", nil, ``})
			if s := st.json(t); st.status != 200 || s["held"] != true || s["holder"] != "worker-a" || s["ttl_remaining_ms"].(float64) < 50_000 {
				t.Fatalf("the lease after %s's tries: %d %s", other.name, st.status, st.body)
			}
			if strings.Contains(string(st.body), leaseID) || strings.Contains(string(st.body), "alice") {
				t.Fatalf("the lock's status shows its lease id or its key: %s", st.body)
			}
		})
	}
	renewed := k.as(t, k.alice, renew(leaseID))
	if renewedToken, _ := leaseOf(t, renewed); renewedToken != token {
		t.Fatalf("alice renews: %s", renewed.body)
	}
	if r := k.as(t, k.alice, release(leaseID)); r.status != 204 {
		t.Fatalf("alice releases: %d %s", r.status, r.body)
	}

	// An account's lease: its own key's, or the admin's; bob's try is a
	// missing account's answer.
	a := k.createAccount(t, k.alice, 100)
	lockAccount := func(secret, id string) response {
		return k.as(t, secret, request{"POST", "/v1/locks/account:" + id, nil, `{"holder":"h","ttl_ms":60000}`})
	}
	want := lockAccount(k.bob, "999999")
	got := lockAccount(k.bob, a)
	if got.status != 404 || string(got.body) != strings.ReplaceAll(string(want.body), "999999", a) {
		t.Fatalf("bob takes alice's account lease: %d %s", got.status, got.body)
	}
	_, aliceLease := leaseOf(t, lockAccount(k.alice, a))
	if r := k.as(t, k.alice, request{"DELETE", "/v1/locks/account:" + a, map[string]string{"Lease-Id": aliceLease}, ``}); r.status != 204 {
		t.Fatalf("alice releases her account's lease: %d %s", r.status, r.body)
	}
	leaseOf(t, lockAccount(k.ops, a))
}

// TestKeysNeverLogged: whatever a request carries — a good key, an unknown
// one, a mangled one — and however it ends, no log line holds the key.
func TestKeysNeverLogged(t *testing.T) {
	t.Parallel()
	k := setupKeys(t)
	wrong, _, err := apikey.New("alice", apikey.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	id := k.createAccount(t, k.alice, 100)
	for _, secret := range []string{k.alice, k.ops, wrong, k.alice + "x"} {
		for _, req := range []request{
			{"GET", "/v1/accounts/" + id, nil, ``},
			{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":1000}`},
			{"POST", "/v1/accounts/" + id + "/withdrawals", nil, `{"amount":1`},
			{"POST", "/v1/locks/p", nil, `{"holder":"h","ttl_ms":1000}`},
			{"GET", "/v1/nowhere", nil, ``},
		} {
			k.as(t, secret, req)
		}
		k.do(t, request{"GET", "/v1/locks", map[string]string{"Authorization": secret}, ``})
	}
	logs := k.logs.String()
	if strings.Count(logs, "msg=request") < 20 {
		t.Fatalf("too few request lines logged to judge by:\n%s", logs)
	}
	// Requests are logged with the name of their key, for the audit.
	if !strings.Contains(logs, "path=/v1/accounts/"+id+" status=200") || !strings.Contains(logs, "api_key=alice") || !strings.Contains(logs, "api_key=ops") {
		t.Fatalf("the request lines do not name the keys:\n%s", logs)
	}
	for _, secret := range []string{k.alice, k.ops, wrong} {
		// The random part alone, in case a log line cut off the prefix.
		if strings.Contains(logs, strings.TrimPrefix(secret, "lbk_")) {
			t.Fatalf("a key is in the log:\n%s", logs)
		}
	}
}
