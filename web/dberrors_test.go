package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
)

// Every failure of the database that a client can meet gets a stable code:
// 503 with Retry-After when trying again is the answer, outcome_unknown only
// where a COMMIT may have run, and never 500 internal. Each test below makes
// PostgreSQL fail that way for real.

// setupWithSettings is setup with bankd's sessions running with settings
// (lock_timeout, statement_timeout, …); b.pool is a plain pool on the same
// database, for the test's own statements.
func setupWithSettings(t *testing.T, opts account.Options, settings map[string]string) bundle {
	t.Helper()
	admin := pgtest.New(t)
	cfg := admin.Config().Copy()
	for k, v := range settings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return serve(t, opts, pool, admin)
}

// wantProblem asserts that r is a problem+json with status and code, and
// that a 503 says when to retry.
func wantProblem(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.json(t)["code"] != code {
		t.Errorf("%s: %d %s; want %d %s", what, r.status, r.body, status, code)
		return
	}
	if status == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
		t.Errorf("%s: %d %s without Retry-After", what, r.status, r.body)
	}
}

// fencedWrite begins a write fenced by token on resource, as a client's
// write with a Fencing-Token does: its check locks the lease row (FOR SHARE)
// until the returned transaction ends.
func (b bundle) fencedWrite(t *testing.T, resource string, token int64) pgx.Tx {
	t.Helper()
	tx, err := b.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	// The verdict (live or expired) does not matter here, the lock does.
	if err := lockmgr.CheckFence(context.Background(), tx, resource, token); err != nil && !errors.Is(err, lockmgr.ErrLeaseExpired) {
		t.Fatal(err)
	}
	return tx
}

// expireLock makes the database consider resource's lease over, as if its
// TTL had run out.
func (b bundle) expireLock(t *testing.T, resource string) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(), `UPDATE leases SET expires_at = clock_timestamp() WHERE resource = $1`, resource); err != nil {
		t.Fatal(err)
	}
}

// waitForLockWaiter waits until a session of b's database waits for a lock.
func (b bundle) waitForLockWaiter(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := b.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no session ever waited for a lock")
		}
	}
}

// accountState reads account id's balance and how many ledger entries it has.
func (b bundle) accountState(t *testing.T, id int64) (balance, entries int64) {
	t.Helper()
	if err := b.pool.QueryRow(context.Background(), `SELECT balance, (SELECT count(*) FROM ledger_entries WHERE account_id = $1)
		FROM accounts WHERE id = $1`, id).Scan(&balance, &entries); err != nil {
		t.Fatal(err)
	}
	return balance, entries
}

func accountPath(id int64, rest string) string {
	return "/v1/accounts/" + strconv.FormatInt(id, 10) + rest
}

func renewRequest(resource, leaseID string) request {
	return request{"PUT", "/v1/locks/" + resource, nil, `{"lease_id":"` + leaseID + `","ttl_ms":30000}`}
}

func releaseRequest(resource, leaseID string) request {
	return request{"DELETE", "/v1/locks/" + resource, map[string]string{"Lease-Id": leaseID}, ``}
}

// TestLockCallsBehindAFencedWrite (55P03 lock_not_available): while a fenced
// write holds a lease's row, renewing or releasing that lease waits for the
// row for lock_timeout and then answers 503 lock_timeout — nothing changed —
// and goes through once the write has committed.
func TestLockCallsBehindAFencedWrite(t *testing.T) {
	t.Parallel()
	b := setupWithSettings(t, account.Options{}, map[string]string{"lock_timeout": "200"})
	token, leaseID := leaseOf(t, b.lock(t, "printer:1", `{"holder":"node-a","ttl_ms":60000}`))
	writer := b.fencedWrite(t, "printer:1", token)

	wantProblem(t, "renew behind a fenced write", b.do(t, renewRequest("printer:1", leaseID)), 503, "lock_timeout")
	wantProblem(t, "release behind a fenced write", b.do(t, releaseRequest("printer:1", leaseID)), 503, "lock_timeout")
	if err := writer.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := leaseOf(t, b.do(t, renewRequest("printer:1", leaseID))); got != token {
		t.Fatalf("renew after the write: token %d, want %d", got, token)
	}
	if r := b.do(t, releaseRequest("printer:1", leaseID)); r.status != http.StatusNoContent {
		t.Fatalf("release after the write: %d %s", r.status, r.body)
	}
}

// TestReadOnlyDatabase (25006 read_only_sql_transaction): a database that
// takes no writes — a standby, a demoted primary — refuses every change with
// 503 database_unavailable and changes nothing; reads still work.
func TestReadOnlyDatabase(t *testing.T) {
	t.Parallel()
	b := setupWithSettings(t, account.Options{}, map[string]string{"default_transaction_read_only": "on"})
	ctx := context.Background()
	admin := lockmgr.New(b.pool, lockmgr.Options{})
	t.Cleanup(admin.Close)
	accounts := account.NewService(b.pool, account.Options{})
	a, err := accounts.Create(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	fenced, err := accounts.Create(ctx, "bob", 1000)
	if err != nil {
		t.Fatal(err)
	}
	printer, err := admin.TryAcquire(ctx, "printer:1", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	clientLease, err := admin.TryAcquire(ctx, account.LeaseResource(fenced.ID), "client", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	token := map[string]string{"Fencing-Token": strconv.FormatInt(clientLease.Token, 10)}

	for _, tt := range []struct {
		name string
		req  request
	}{
		{"CreateAccount", request{"POST", "/v1/accounts", nil, `{"owner":"carol","balance":1}`}},
		{"Deposit", request{"POST", accountPath(a.ID, "/deposits"), nil, `{"amount":1}`}},
		{"RowWithdrawal", request{"POST", accountPath(a.ID, "/withdrawals"), nil, `{"amount":1}`}},
		{"LeaseWithdrawal", request{"POST", accountPath(a.ID, "/withdrawals"), nil, `{"amount":1,"strategy":"lease"}`}},
		{"FencedDeposit", request{"POST", accountPath(fenced.ID, "/deposits"), token, `{"amount":1}`}},
		{"AcquireLock", request{"POST", "/v1/locks/printer:2", nil, `{"holder":"node-b","ttl_ms":1000}`}},
		{"RenewLock", renewRequest("printer:1", printer.ID)},
		{"ReleaseLock", releaseRequest("printer:1", printer.ID)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantProblem(t, tt.name, b.do(t, tt.req), 503, "database_unavailable")
		})
	}
	if r := b.do(t, request{"GET", accountPath(a.ID, ""), nil, ``}); r.status != 200 {
		t.Fatalf("a read from a read-only database: %d %s", r.status, r.body)
	}
	for _, id := range []int64{a.ID, fenced.ID} {
		if balance, entries := b.accountState(t, id); balance != 1000 || entries != 0 {
			t.Fatalf("account %d: balance %d with %d entries; want 1000 with none", id, balance, entries)
		}
	}
	var leases int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM leases`).Scan(&leases); err != nil || leases != 2 {
		t.Fatalf("%d leases (%v); want the 2 taken before", leases, err)
	}
	if s, err := admin.Get(ctx, "printer:1"); err != nil || !s.Held || !s.ExpiresAt.Equal(printer.ExpiresAt) {
		t.Fatalf("printer:1 after the refused calls: %+v %v; want it as granted", s, err)
	}
}

// TestStatementTimeout (57014 query_canceled): a statement that PostgreSQL
// cancels (statement_timeout here; pg_cancel_backend alike) failed and
// committed nothing, even a lone change's statement that would have
// committed itself: 503 database_unavailable, never outcome_unknown.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	b := setupWithSettings(t, account.Options{}, map[string]string{"statement_timeout": "300"})
	ctx := context.Background()
	id := b.createAccount(t, 1000)
	token, leaseID := leaseOf(t, b.lock(t, "printer:1", `{"holder":"node-a","ttl_ms":60000}`))
	writer := b.fencedWrite(t, "printer:1", token)
	if _, err := writer.Exec(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}

	wantProblem(t, "deposit behind a held row", b.do(t, request{"POST", accountPath(id, "/deposits"), nil, `{"amount":1}`}), 503, "database_unavailable")
	wantProblem(t, "keyed withdrawal behind a held row", b.do(t, request{"POST", accountPath(id, "/withdrawals"),
		map[string]string{"Idempotency-Key": "w1"}, `{"amount":1}`}), 503, "database_unavailable")
	wantProblem(t, "renew behind a fenced write", b.do(t, renewRequest("printer:1", leaseID)), 503, "database_unavailable")
	wantProblem(t, "release behind a fenced write", b.do(t, releaseRequest("printer:1", leaseID)), 503, "database_unavailable")
	if err := writer.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if balance, entries := b.accountState(t, id); balance != 1000 || entries != 0 {
		t.Fatalf("balance %d with %d entries; want 1000 with none", balance, entries)
	}
	r := b.do(t, request{"POST", accountPath(id, "/withdrawals"), map[string]string{"Idempotency-Key": "w1"}, `{"amount":1}`})
	if r.status != 201 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("the keyed withdrawal retried: %d %s; want it applied now", r.status, r.body)
	}
}

// TestSessionTerminatedWhileWaiting (57P01 admin_shutdown): a session ended
// (pg_terminate_backend, a restart) while its statement waited. A lock call
// is one statement that commits itself, and a lost session cannot tell
// whether it got that far: outcome_unknown. A lease withdrawal whose lease
// grant was lost certainly changed no account: database_unavailable. Either
// way a retry is safe and goes through.
func TestSessionTerminatedWhileWaiting(t *testing.T) {
	t.Parallel()
	// Pools of their own: the test's three writers would take up bankd's.
	b := setupWithSettings(t, account.Options{LeaseWait: time.Minute}, nil)
	ctx := context.Background()
	id := b.createAccount(t, 1000)
	resource := account.LeaseResource(id)
	live, liveID := leaseOf(t, b.lock(t, "printer:1", `{"holder":"node-a","ttl_ms":60000}`))
	expired, _ := leaseOf(t, b.lock(t, "printer:2", `{"holder":"node-a","ttl_ms":60000}`))
	b.expireLock(t, "printer:2")
	expiredAccount, _ := leaseOf(t, b.lock(t, resource, `{"holder":"client","ttl_ms":60000}`))
	b.expireLock(t, resource)
	var writers []pgx.Tx
	for _, l := range []struct {
		resource string
		token    int64
	}{{"printer:1", live}, {"printer:2", expired}, {resource, expiredAccount}} {
		writers = append(writers, b.fencedWrite(t, l.resource, l.token))
	}

	for _, tt := range []struct {
		name string
		req  request
		code string
	}{
		{"RenewLock", renewRequest("printer:1", liveID), "outcome_unknown"},
		{"ReleaseLock", releaseRequest("printer:1", liveID), "outcome_unknown"},
		{"TakeOverLock", request{"POST", "/v1/locks/printer:2", nil, `{"holder":"node-b","ttl_ms":60000}`}, "outcome_unknown"},
		{"LeaseWithdrawal", request{"POST", accountPath(id, "/withdrawals"), nil, `{"amount":100,"strategy":"lease"}`}, "database_unavailable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			type answer struct {
				r   response
				err error
			}
			done := make(chan answer, 1)
			go func() {
				r, err := b.send(tt.req)
				done <- answer{r, err}
			}()
			b.waitForLockWaiter(t)
			if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
				t.Fatal(err)
			}
			a := <-done
			if a.err != nil {
				t.Fatal(a.err)
			}
			wantProblem(t, tt.name, a.r, 503, tt.code)
		})
	}
	for _, w := range writers {
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if balance, entries := b.accountState(t, id); balance != 1000 || entries != 0 {
		t.Fatalf("balance %d with %d entries; want 1000 with none", balance, entries)
	}
	if got, _ := leaseOf(t, b.do(t, renewRequest("printer:1", liveID))); got != live {
		t.Fatalf("renew retried: token %d, want %d", got, live)
	}
	if r := b.do(t, request{"POST", accountPath(id, "/withdrawals"), nil, `{"amount":100,"strategy":"lease"}`}); r.status != 201 {
		t.Fatalf("lease withdrawal retried: %d %s", r.status, r.body)
	}
}

// TestConflictRetriesExhausted (40001 serialization_failure, 40P01
// deadlock_detected): PostgreSQL aborts a transaction over a conflict with
// another and bankd tries it again — but not forever. When the conflicts
// do not stop, the change answers 503 lock_timeout and nothing is written.
// (A trigger raises the SQLSTATE on every try: a real conflict does not
// come back on cue five times in a row.)
func TestConflictRetriesExhausted(t *testing.T) {
	t.Parallel()
	for _, sqlstate := range []string{"40001", "40P01"} {
		t.Run(sqlstate, func(t *testing.T) {
			t.Parallel()
			b := setup(t, account.Options{UnsafeDemo: true, LeaseTTL: 300 * time.Millisecond})
			ctx := context.Background()
			id := b.createAccount(t, 1000)
			if _, err := b.pool.Exec(ctx, fmt.Sprintf(`
				CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'a conflict with another transaction' USING ERRCODE = '%s'; END $$;
				CREATE TRIGGER conflict BEFORE INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION conflict()`, sqlstate)); err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				name string
				body string
			}{
				{"RowWithdrawal", `{"amount":1}`},
				{"HeldRowWithdrawal", `{"amount":1,"hold_ms":1}`},
				{"LeaseWithdrawal", `{"amount":1,"strategy":"lease"}`},
			} {
				wantProblem(t, tt.name, b.do(t, request{"POST", accountPath(id, "/withdrawals"), nil, tt.body}), 503, "lock_timeout")
			}
			wantProblem(t, "Deposit", b.do(t, request{"POST", accountPath(id, "/deposits"), nil, `{"amount":1}`}), 503, "lock_timeout")
			if balance, entries := b.accountState(t, id); balance != 1000 || entries != 0 {
				t.Fatalf("balance %d with %d entries; want 1000 with none", balance, entries)
			}
		})
	}
}
