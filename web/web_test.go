package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type bundle struct {
	pool *pgxpool.Pool
	url  string
}

// setup serves the real handler over a real socket on a fresh database.
func setup(t *testing.T, opts account.Options) bundle {
	t.Helper()
	pool := pgtest.New(t)
	return serve(t, opts, pool, pool)
}

// serve serves the real handler over a real socket on pool; b.pool is admin,
// the test's own way into the same database.
func serve(t *testing.T, opts account.Options, pool, admin *pgxpool.Pool) bundle {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	locks := lockmgr.New(pool, lockmgr.Options{})
	t.Cleanup(locks.Close)
	opts.Locks = locks
	srv := httptest.NewServer(contract.Check(t)(web.NewServer(logger, "node-t", account.NewService(pool, opts), locks, nil, pool.Ping, nil)))
	t.Cleanup(srv.Close)
	return bundle{pool: admin, url: srv.URL}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not a JSON object: %v: %s", r.status, err, r.body)
	}
	return m
}

type request struct {
	method, path string
	header       map[string]string
	body         string
}

func (b bundle) do(t *testing.T, req request) response {
	t.Helper()
	r, err := b.send(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's, which must not call
// t.Fatal: it returns the error instead.
func (b bundle) send(req request) (response, error) {
	httpReq, err := http.NewRequest(req.method, b.url+req.path, strings.NewReader(req.body))
	if err != nil {
		return response{}, err
	}
	if req.body != "" {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	for k, v := range req.header {
		if v == "<none>" {
			httpReq.Header.Del(k)
			continue
		}
		httpReq.Header[http.CanonicalHeaderKey(k)] = []string{v}
	}
	resp, err := http.DefaultClient.Do(httpReq)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: body}, err
}

func (b bundle) createAccount(t *testing.T, balance int64) int64 {
	t.Helper()
	r := b.do(t, request{method: "POST", path: "/v1/accounts", body: `{"owner":"alice","balance":` + strconv.FormatInt(balance, 10) + `}`})
	if r.status != http.StatusCreated {
		t.Fatalf("create account: %d %s", r.status, r.body)
	}
	return int64(r.json(t)["id"].(float64))
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(sorted(ks), ",")
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestAccountLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})

	r := b.do(t, request{method: "POST", path: "/v1/accounts", body: `{"owner":"alice","balance":5000}`})
	if r.status != http.StatusCreated || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	acct := r.json(t)
	if got, want := keys(acct), "balance,created_at,currency,fence_token,id,opening_balance,owner,updated_at"; got != want {
		t.Fatalf("account fields %s, want %s", got, want)
	}
	id := strconv.FormatInt(int64(acct["id"].(float64)), 10)
	if loc := r.header.Get("Location"); loc != "/v1/accounts/"+id {
		t.Errorf("Location %q", loc)
	}

	r = b.do(t, request{method: "POST", path: "/v1/accounts/" + id + "/deposits", body: `{"amount":500}`})
	if r.status != http.StatusCreated {
		t.Fatalf("deposit: %d %s", r.status, r.body)
	}
	dep := r.json(t)
	if got, want := keys(dep), "account_id,amount,balance,created_at,fence_token,id,kind,strategy"; got != want {
		t.Fatalf("deposit fields %s, want %s", got, want)
	}
	if dep["balance"].(float64) != 5500 || dep["kind"] != "deposit" {
		t.Fatalf("deposit = %s", r.body)
	}

	r = b.do(t, request{method: "POST", path: "/v1/accounts/" + id + "/withdrawals", body: `{"amount":2000,"strategy":"row"}`})
	if r.status != http.StatusCreated || r.json(t)["balance"].(float64) != 3500 || r.json(t)["strategy"] != "row" {
		t.Fatalf("withdraw: %d %s", r.status, r.body)
	}
	// An absent strategy means row.
	r = b.do(t, request{method: "POST", path: "/v1/accounts/" + id + "/withdrawals", body: `{"amount":500}`})
	if r.status != http.StatusCreated || r.json(t)["strategy"] != "row" {
		t.Fatalf("withdraw without strategy: %d %s", r.status, r.body)
	}

	r = b.do(t, request{method: "GET", path: "/v1/accounts/" + id})
	if r.status != http.StatusOK || r.json(t)["balance"].(float64) != 3000 {
		t.Fatalf("get: %d %s", r.status, r.body)
	}

	r = b.do(t, request{method: "GET", path: "/v1/accounts/" + id + "/ledger"})
	var ledger struct {
		Entries []account.Entry `json:"entries"`
	}
	if err := json.Unmarshal(r.body, &ledger); err != nil || r.status != http.StatusOK {
		t.Fatalf("ledger: %d %s %v", r.status, r.body, err)
	}
	var kinds []string
	for _, e := range ledger.Entries {
		kinds = append(kinds, e.Kind+":"+strconv.FormatInt(e.Amount, 10)+"→"+strconv.FormatInt(e.Balance, 10))
	}
	if got, want := strings.Join(kinds, " "), "deposit:500→5500 withdrawal:2000→3500 withdrawal:500→3000"; got != want {
		t.Fatalf("ledger %s, want %s", got, want)
	}

	r = b.do(t, request{method: "GET", path: "/v1/accounts/" + id + "/ledger?limit=2"})
	page := r.json(t)
	if len(page["entries"].([]any)) != 2 || page["next_after"] == nil {
		t.Fatalf("ledger page: %s", r.body)
	}
}

// TestBadRequestsChangeNothing sends malformed and invalid requests to every
// endpoint; each gets its 4xx problem+json with a stable code, and the
// account, its ledger and the set of accounts are unchanged afterwards.
func TestBadRequestsChangeNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	id := strconv.FormatInt(b.createAccount(t, 1000), 10)
	acct := "/v1/accounts/" + id
	big := `{"owner":"` + strings.Repeat("x", 70_000) + `"}`
	tests := []struct {
		name string
		req  request
		want int
		code string
	}{
		{"EmptyOwner", request{"POST", "/v1/accounts", nil, `{"owner":"","balance":1}`}, 422, "invalid_request"},
		{"MissingOwner", request{"POST", "/v1/accounts", nil, `{"balance":1}`}, 422, "invalid_request"},
		{"LongOwner", request{"POST", "/v1/accounts", nil, `{"owner":"` + strings.Repeat("é", 101) + `"}`}, 422, "invalid_request"},
		{"OwnerNotString", request{"POST", "/v1/accounts", nil, `{"owner":42}`}, 422, "invalid_request"},
		{"NegativeOpeningBalance", request{"POST", "/v1/accounts", nil, `{"owner":"a","balance":-1}`}, 422, "invalid_amount"},
		{"OpeningBalanceString", request{"POST", "/v1/accounts", nil, `{"owner":"a","balance":"100"}`}, 422, "invalid_amount"},
		{"TruncatedJSON", request{"POST", "/v1/accounts", nil, `{"owner":"a"`}, 400, "malformed_json"},
		{"NotJSON", request{"POST", "/v1/accounts", nil, `owner=a`}, 400, "malformed_json"},
		{"EmptyBody", request{"POST", "/v1/accounts", map[string]string{"Content-Type": "application/json"}, ``}, 400, "malformed_json"},
		{"ArrayBody", request{"POST", "/v1/accounts", nil, `[]`}, 400, "malformed_json"},
		{"UnknownField", request{"POST", "/v1/accounts", nil, `{"owner":"a","admin":true}`}, 400, "unknown_field"},
		{"NoContentType", request{"POST", "/v1/accounts", map[string]string{"Content-Type": "<none>"}, `{"owner":"a"}`}, 415, "unsupported_media_type"},
		{"TextContentType", request{"POST", "/v1/accounts", map[string]string{"Content-Type": "text/plain"}, `{"owner":"a"}`}, 415, "unsupported_media_type"},
		{"BodyTooLarge", request{"POST", "/v1/accounts", nil, big}, 413, "body_too_large"},
		{"ZeroAmount", request{"POST", acct + "/deposits", nil, `{"amount":0}`}, 422, "invalid_amount"},
		{"NegativeAmount", request{"POST", acct + "/deposits", nil, `{"amount":-5}`}, 422, "invalid_amount"},
		{"FractionalAmount", request{"POST", acct + "/deposits", nil, `{"amount":5.5}`}, 422, "invalid_amount"},
		{"WholeFloatAmount", request{"POST", acct + "/deposits", nil, `{"amount":5.0}`}, 422, "invalid_amount"},
		{"ExponentAmount", request{"POST", acct + "/deposits", nil, `{"amount":5e2}`}, 422, "invalid_amount"},
		{"StringAmount", request{"POST", acct + "/deposits", nil, `{"amount":"500"}`}, 422, "invalid_amount"},
		{"NullAmount", request{"POST", acct + "/deposits", nil, `{"amount":null}`}, 422, "invalid_amount"},
		{"MissingAmount", request{"POST", acct + "/deposits", nil, `{}`}, 422, "invalid_amount"},
		{"AmountOverLimit", request{"POST", acct + "/deposits", nil, `{"amount":1000000000000001}`}, 422, "invalid_amount"},
		{"AmountOverflowsInt64", request{"POST", acct + "/deposits", nil, `{"amount":99999999999999999999}`}, 422, "invalid_amount"},
		{"DuplicateKey", request{"POST", acct + "/deposits", nil, `{"amount":1,"amount":900}`}, 400, "malformed_json"},
		{"TrailingData", request{"POST", acct + "/deposits", nil, `{"amount":1}{"amount":1}`}, 400, "malformed_json"},
		{"DepositStrategyField", request{"POST", acct + "/deposits", nil, `{"amount":1,"strategy":"row"}`}, 400, "unknown_field"},
		{"MissingAccount", request{"POST", "/v1/accounts/999999/deposits", nil, `{"amount":1}`}, 404, "account_not_found"},
		{"NonNumericID", request{"POST", "/v1/accounts/abc/deposits", nil, `{"amount":1}`}, 404, "account_not_found"},
		{"ZeroID", request{"POST", "/v1/accounts/0/withdrawals", nil, `{"amount":1}`}, 404, "account_not_found"},
		{"NegativeID", request{"GET", "/v1/accounts/-1", nil, ``}, 404, "account_not_found"},
		{"TwentyDigitID", request{"GET", "/v1/accounts/12345678901234567890", nil, ``}, 404, "account_not_found"},
		{"EmptyStrategy", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"strategy":""}`}, 422, "unknown_strategy"},
		{"UnknownStrategy", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"strategy":"optimistic"}`}, 422, "unknown_strategy"},
		{"StrategyNotString", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"strategy":5}`}, 422, "invalid_request"},
		{"UnsafeOutsideDemo", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"strategy":"unsafe"}`}, 403, "unsafe_disabled"},
		{"HoldOutsideDemo", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"hold_ms":100}`}, 403, "unsafe_disabled"},
		{"HoldNegative", request{"POST", acct + "/withdrawals", nil, `{"amount":1,"hold_ms":-1}`}, 422, "invalid_request"},
		{"InsufficientFunds", request{"POST", acct + "/withdrawals", nil, `{"amount":1001}`}, 409, "insufficient_funds"},
		{"EmptyIdempotencyKey", request{"POST", acct + "/withdrawals", map[string]string{"Idempotency-Key": ""}, `{"amount":1}`}, 400, "invalid_idempotency_key"},
		{"LongIdempotencyKey", request{"POST", acct + "/deposits", map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, `{"amount":1}`}, 400, "invalid_idempotency_key"},
		{"LedgerLimitZero", request{"GET", acct + "/ledger?limit=0", nil, ``}, 422, "invalid_request"},
		{"LedgerAfterNegative", request{"GET", acct + "/ledger?after=-1", nil, ``}, 422, "invalid_request"},
		{"LedgerOfMissingAccount", request{"GET", "/v1/accounts/999999/ledger", nil, ``}, 404, "account_not_found"},
		{"MethodNotAllowed", request{"DELETE", acct, nil, ``}, 405, "method_not_allowed"},
		{"NoSuchRoute", request{"GET", "/v2/accounts", nil, ``}, 404, "not_found"},
		{"NoSuchV1Route", request{"GET", "/v1/nope", nil, ``}, 404, "not_found"},
		{"V1MethodNotAllowed", request{"DELETE", "/v1/locks", nil, ``}, 405, "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.do(t, tt.req)
			if r.status != tt.want {
				t.Fatalf("status %d, want %d: %s", r.status, tt.want, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			p := r.json(t)
			if p["code"] != tt.code || p["status"].(float64) != float64(tt.want) || p["title"] == "" || p["type"] == "" || p["detail"] == "" {
				t.Errorf("problem %s, want code %s", r.body, tt.code)
			}
		})
	}

	var balance int64
	var entries, accounts int
	if err := b.pool.QueryRow(context.Background(), `SELECT (SELECT balance FROM accounts WHERE id = $1),
		(SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM accounts)`, id).Scan(&balance, &entries, &accounts); err != nil {
		t.Fatal(err)
	}
	if balance != 1000 || entries != 0 || accounts != 1 {
		t.Fatalf("after bad input: balance %d, %d ledger entries, %d accounts; want 1000, 0, 1", balance, entries, accounts)
	}
}

func TestIdempotentRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	acct := "/v1/accounts/" + strconv.FormatInt(b.createAccount(t, 1000), 10)
	key := map[string]string{"Idempotency-Key": "order-7"}

	first := b.do(t, request{"POST", acct + "/withdrawals", key, `{"amount":300}`})
	again := b.do(t, request{"POST", acct + "/withdrawals", key, `{ "amount": 300 }`})
	if first.status != 201 || again.status != 201 || !bytes.Equal(first.body, again.body) {
		t.Fatalf("first %d %s, retry %d %s: want the same 201", first.status, first.body, again.status, again.body)
	}
	if first.header.Get("Idempotent-Replayed") != "" || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("Idempotent-Replayed: first %q, retry %q", first.header.Get("Idempotent-Replayed"), again.header.Get("Idempotent-Replayed"))
	}

	reused := b.do(t, request{"POST", acct + "/withdrawals", key, `{"amount":301}`})
	if reused.status != 422 || reused.json(t)["code"] != "idempotency_key_reused" {
		t.Fatalf("same key, other body: %d %s", reused.status, reused.body)
	}

	// A refusal is an outcome too: its retry gets the same answer even after
	// the money arrives.
	over := map[string]string{"Idempotency-Key": "order-8"}
	refused := b.do(t, request{"POST", acct + "/withdrawals", over, `{"amount":5000}`})
	b.do(t, request{"POST", acct + "/deposits", nil, `{"amount":10000}`})
	refusedAgain := b.do(t, request{"POST", acct + "/withdrawals", over, `{"amount":5000}`})
	if refused.status != 409 || refusedAgain.status != 409 || !bytes.Equal(refused.body, refusedAgain.body) || refusedAgain.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("refusal %d %s, retry %d %s", refused.status, refused.body, refusedAgain.status, refusedAgain.body)
	}

	r := b.do(t, request{"GET", acct + "/ledger", nil, ``})
	var ledger struct{ Entries []account.Entry }
	_ = json.Unmarshal(r.body, &ledger)
	if len(ledger.Entries) != 2 || ledger.Entries[0].IdempotencyKey != "order-7" || ledger.Entries[1].Kind != "deposit" {
		t.Fatalf("ledger %s", r.body)
	}
}

// TestUnsafeDemoDoubleSpendsOverHTTP is the seed's race as a user makes it
// with two curl commands: both withdrawals of the whole balance succeed.
func TestUnsafeDemoDoubleSpendsOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{UnsafeDemo: true})
	acct := "/v1/accounts/" + strconv.FormatInt(b.createAccount(t, 5000), 10)
	start := make(chan struct{})
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range statuses {
		wg.Go(func() {
			<-start
			statuses[i] = b.do(t, request{"POST", acct + "/withdrawals", nil, `{"amount":5000,"strategy":"unsafe","hold_ms":1000}`}).status
		})
	}
	close(start)
	wg.Wait()
	if statuses[0] != 201 || statuses[1] != 201 {
		t.Fatalf("statuses %v, want both 201 (the double spend)", statuses)
	}
	r := b.do(t, request{"GET", acct + "/ledger", nil, ``})
	var ledger struct{ Entries []account.Entry }
	_ = json.Unmarshal(r.body, &ledger)
	if len(ledger.Entries) != 2 || b.do(t, request{"GET", acct, nil, ``}).json(t)["balance"].(float64) != 0 {
		t.Fatalf("want 2 withdrawals of 5000 from 5000 and balance 0; ledger %s", r.body)
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	if r := b.do(t, request{"GET", "/readyz", nil, ``}); r.status != 200 {
		t.Fatalf("readyz with a live database: %d %s", r.status, r.body)
	}
	if r := b.do(t, request{"GET", "/healthz", nil, ``}); r.status != 200 || r.json(t)["node"] != "node-t" {
		t.Fatalf("healthz: %d %s", r.status, r.body)
	}

	// A pool whose database is gone (nothing listens on port 1).
	dead, err := pgxpool.New(context.Background(), "postgres://x:y@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dead.Close)
	deadLocks := lockmgr.New(dead, lockmgr.Options{})
	t.Cleanup(deadLocks.Close)
	srv := httptest.NewServer(contract.Check(t)(web.NewServer(slog.New(slog.DiscardHandler), "node-t", account.NewService(dead, account.Options{Locks: deadLocks}), deadLocks, nil, dead.Ping, nil)))
	t.Cleanup(srv.Close)
	down := bundle{url: srv.URL}
	r := down.do(t, request{"GET", "/readyz", nil, ``})
	if r.status != 503 || r.json(t)["code"] != "database_unavailable" {
		t.Fatalf("readyz without a database: %d %s", r.status, r.body)
	}
	if r := down.do(t, request{"GET", "/healthz", nil, ``}); r.status != 200 {
		t.Fatalf("healthz without a database: %d (the process is up)", r.status)
	}
	r = down.do(t, request{"POST", "/v1/accounts/1/deposits", nil, `{"amount":1}`})
	if r.status != 503 || r.header.Get("Retry-After") == "" || r.json(t)["code"] != "database_unavailable" {
		t.Fatalf("deposit without a database: %d %s", r.status, r.body)
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	if r := b.do(t, request{"GET", "/healthz", map[string]string{"X-Request-Id": "trace-42"}, ``}); r.header.Get("X-Request-Id") != "trace-42" {
		t.Fatalf("X-Request-Id %q, want the client's", r.header.Get("X-Request-Id"))
	}
	if r := b.do(t, request{"GET", "/healthz", nil, ``}); len(r.header.Get("X-Request-Id")) != 16 {
		t.Fatalf("X-Request-Id %q, want a generated one", r.header.Get("X-Request-Id"))
	}
}
