package web_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/lockbank/lockbank/account"
)

// badInput is one request that must be refused with code and status, and
// change nothing.
type badInput struct {
	name string
	req  request
	want int
	code string
}

// inputWorld is the state every bad-input test starts from and must find
// unchanged: an account with 1000 and no ledger, and a lock "res" held by
// node-a.
type inputWorld struct {
	bundle
	acct    string // "/v1/accounts/{id}"
	id      int64
	leaseID string
	token   int64
}

func newInputWorld(t *testing.T) inputWorld {
	t.Helper()
	b := setup(t, account.Options{UnsafeDemo: true})
	id := b.createAccount(t, 1000)
	token, leaseID := leaseOf(t, b.lock(t, "res", `{"holder":"node-a","ttl_ms":60000}`))
	return inputWorld{bundle: b, acct: "/v1/accounts/" + strconv.FormatInt(id, 10), id: id, leaseID: leaseID, token: token}
}

// refuseAll sends every request, checks each answer, then checks that
// nothing changed: the account, its ledger, the set of accounts, the lock
// "res" (holder, token, TTL) and the set of locks.
func (w inputWorld) refuseAll(t *testing.T, tests []badInput) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.do(t, tt.req)
			if r.status != tt.want || r.header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tt.want, tt.code)
			}
			if p := r.json(t); p["code"] != tt.code || p["detail"] == "" {
				t.Fatalf("problem %s, want code %s", r.body, tt.code)
			}
		})
	}
	var (
		balance           int64
		entries, accounts int
		leases, grants    int
		holder            string
		token, ttlMS      int64
	)
	err := w.pool.QueryRow(context.Background(), `SELECT (SELECT balance FROM accounts WHERE id = $1),
		(SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM accounts),
		(SELECT count(*) FROM leases), (SELECT count(*) FROM lease_grants),
		holder, token, ttl_ms FROM leases WHERE resource = 'res'`, w.id).
		Scan(&balance, &entries, &accounts, &leases, &grants, &holder, &token, &ttlMS)
	if err != nil {
		t.Fatal(err)
	}
	if balance != 1000 || entries != 0 || accounts != 1 {
		t.Errorf("after bad input: balance %d, %d ledger entries, %d accounts; want 1000, 0, 1", balance, entries, accounts)
	}
	if leases != 1 || grants != 1 || holder != "node-a" || token != w.token || ttlMS != 60000 {
		t.Errorf("after bad input: %d leases, %d grants, res held by %q with token %d and TTL %d ms; want 1, 1, node-a, %d, 60000",
			leases, grants, holder, token, ttlMS, w.token)
	}
}

// TestFieldNamesAreExact: a member name matches a field only when it is the
// field's name exactly, after JSON unescaping. Another spelling — case,
// Unicode case folding (ſ is folded to s and K to k by encoding/json) — is an
// unknown field; a name given twice, however it is escaped, is malformed. A
// proxy or an audit log that reads the first "amount" must see what bankd
// applies, on every endpoint that takes a body.
func TestFieldNamesAreExact(t *testing.T) {
	t.Parallel()
	w := newInputWorld(t)
	renew := func(body string) request { return request{"PUT", "/v1/locks/res", nil, body} }
	id := w.leaseID
	w.refuseAll(t, []badInput{
		{"CreateUpperCaseDuplicate", request{"POST", "/v1/accounts", nil, `{"owner":"x","balance":5,"BALANCE":900}`}, 400, "unknown_field"},
		{"CreateTitleCase", request{"POST", "/v1/accounts", nil, `{"Owner":"x","balance":5}`}, 400, "unknown_field"},
		{"CreateRepeated", request{"POST", "/v1/accounts", nil, `{"owner":"x","balance":5,"balance":900}`}, 400, "malformed_json"},
		{"CreateRepeatedEscaped", request{"POST", "/v1/accounts", nil, `{"owner":"x","balance":5,"bal\u0061nce":900}`}, 400, "malformed_json"},
		{"CreateRepeatedEscapedFirst", request{"POST", "/v1/accounts", nil, `{"owner":"x","\u0062alance":900,"balance":5}`}, 400, "malformed_json"},

		{"DepositUpperCaseAfter", request{"POST", w.acct + "/deposits", nil, `{"amount":1,"AMOUNT":900}`}, 400, "unknown_field"},
		{"DepositTitleCase", request{"POST", w.acct + "/deposits", nil, `{"Amount":5}`}, 400, "unknown_field"},
		{"DepositRepeated", request{"POST", w.acct + "/deposits", nil, `{"amount":1,"amount":900}`}, 400, "malformed_json"},
		{"DepositRepeatedEscaped", request{"POST", w.acct + "/deposits", nil, `{"amount":1,"\u0061mount":900}`}, 400, "malformed_json"},

		{"WithdrawUpperCaseAfter", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"AMOUNT":900}`}, 400, "unknown_field"},
		{"WithdrawStrategySwitch", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"strategy":"row","STRATEGY":"unsafe"}`}, 400, "unknown_field"},
		{"WithdrawStrategyFolded", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"\u017ftrategy":"unsafe"}`}, 400, "unknown_field"},
		{"WithdrawStrategyFoldedRaw", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"ſtrategy":"unsafe"}`}, 400, "unknown_field"},
		{"WithdrawHoldFolded", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"hold_m\u017f":10}`}, 400, "unknown_field"},
		{"WithdrawStrategyRepeated", request{"POST", w.acct + "/withdrawals", nil, `{"amount":1,"strategy":"row","strategy":"unsafe"}`}, 400, "malformed_json"},
		{"WithdrawAmountRepeatedEscaped", request{"POST", w.acct + "/withdrawals", nil, `{"\u0061\u006d\u006f\u0075\u006e\u0074":1,"amount":900}`}, 400, "malformed_json"},

		{"AcquireTitleCase", request{"POST", "/v1/locks/x", nil, `{"Holder":"h","ttl_ms":1000}`}, 400, "unknown_field"},
		{"AcquireUpperCaseAfter", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"TTL_MS":600000}`}, 400, "unknown_field"},
		{"AcquireWaitFolded", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"wait_m\u017f":10}`}, 400, "unknown_field"},
		{"AcquireRepeated", request{"POST", "/v1/locks/x", nil, `{"holder":"h","holder":"evil","ttl_ms":1000}`}, 400, "malformed_json"},
		{"AcquireRepeatedEscaped", request{"POST", "/v1/locks/x", nil, `{"holder":"h","ttl_ms":1000,"ttl_m\u0073":600000}`}, 400, "malformed_json"},

		{"RenewUpperCaseAfter", renew(`{"lease_id":"` + id + `","ttl_ms":1000,"TTL_MS":600000}`), 400, "unknown_field"},
		{"RenewLeaseIDFolded", renew(`{"lea\u017fe_id":"` + id + `","ttl_ms":1000}`), 400, "unknown_field"},
		{"RenewRepeated", renew(`{"lease_id":"` + id + `","ttl_ms":1000,"ttl_ms":2000}`), 400, "malformed_json"},
		{"RenewRepeatedEscaped", renew(`{"lease_id":"` + id + `","\u006cease_id":"` + id + `","ttl_ms":1000}`), 400, "malformed_json"},
	})
}

// TestEscapedNamesAreNames: a name is judged after JSON unescaping, so an
// escaped spelling of a field's exact name is that field.
func TestEscapedNamesAreNames(t *testing.T) {
	t.Parallel()
	w := newInputWorld(t)
	r := w.do(t, request{"POST", w.acct + "/deposits", nil, `{"\u0061mount":5}`})
	if r.status != http.StatusCreated || r.json(t)["amount"].(float64) != 5 {
		t.Fatalf("escaped exact name: %d %s, want 201 depositing 5", r.status, r.body)
	}
}

// TestTextFieldsCarryText: owner and holder must be text (valid UTF-8, no
// control, format or line-separator characters) — refused with 422
// invalid_request, never the database's 500 — and the Idempotency-Key
// printable ASCII (400). A body that is not valid UTF-8 is not JSON (400).
func TestTextFieldsCarryText(t *testing.T) {
	t.Parallel()
	w := newInputWorld(t)
	owner := func(s string) request {
		return request{"POST", "/v1/accounts", nil, `{"owner":"` + s + `","balance":5}`}
	}
	holder := func(s string) request {
		return request{"POST", "/v1/locks/x", nil, `{"holder":"` + s + `","ttl_ms":1000}`}
	}
	key := func(k string) request {
		return request{"POST", w.acct + "/deposits", map[string]string{"Idempotency-Key": k}, `{"amount":1}`}
	}
	w.refuseAll(t, []badInput{
		{"OwnerNUL", owner(`a\u0000b`), 422, "invalid_request"},
		{"OwnerEscape", owner(`\u001b[31mred`), 422, "invalid_request"},
		{"OwnerNewline", owner(`a\nb`), 422, "invalid_request"},
		{"OwnerDEL", owner("a\x7fb"), 422, "invalid_request"},
		{"OwnerC1", owner(`a\u0085b`), 422, "invalid_request"},
		{"OwnerBidiOverride", owner(`evil\u202egnp`), 422, "invalid_request"},
		{"OwnerZeroWidth", owner(`ali\u200bce`), 422, "invalid_request"},
		{"OwnerLineSeparator", owner(`a\u2028b`), 422, "invalid_request"},
		{"OwnerLoneSurrogate", owner(`a\ud800b`), 400, "malformed_json"},
		{"OwnerInvalidUTF8", owner("a\xffb"), 400, "malformed_json"},
		{"HolderNUL", holder(`node\u0000a`), 422, "invalid_request"},
		{"HolderTab", holder(`node\ta`), 422, "invalid_request"},
		{"HolderC1", holder(`node\u009ba`), 422, "invalid_request"},
		{"HolderBidiOverride", holder(`node\u202ea`), 422, "invalid_request"},
		{"HolderInvalidUTF8", holder("node\xc3"), 400, "malformed_json"},
		{"ResourceNUL", request{"POST", "/v1/locks/a%00b", nil, `{"holder":"h","ttl_ms":1000}`}, 422, "invalid_request"},
		{"ResourceNonASCII", request{"POST", "/v1/locks/r%C3%A9s", nil, `{"holder":"h","ttl_ms":1000}`}, 422, "invalid_request"},
		{"KeyNonASCII", key("clé"), 400, "invalid_idempotency_key"},
		{"KeyTab", key("a\tb"), 400, "invalid_idempotency_key"},
	})
}

// TestTextIsKeptAsSent: text is stored and shown exactly as sent — other
// scripts, and leading and trailing spaces, which are never trimmed.
func TestTextIsKeptAsSent(t *testing.T) {
	t.Parallel()
	w := newInputWorld(t)
	for _, name := range []string{"  bob  ", "Zoë Łukasz 日本", "e\u0301"} {
		r := w.do(t, request{"POST", "/v1/accounts", nil, `{"owner":"` + name + `","balance":1}`})
		if r.status != http.StatusCreated || r.json(t)["owner"] != name {
			t.Errorf("owner %q: %d %s", name, r.status, r.body)
		}
		r = w.lock(t, "t-"+strconv.Itoa(len(name)), `{"holder":"`+name+`","ttl_ms":1000}`)
		if r.status != http.StatusCreated || r.json(t)["holder"] != name {
			t.Errorf("holder %q: %d %s", name, r.status, r.body)
		}
	}
}
