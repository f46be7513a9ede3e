package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/client"
)

// refusal returns err as an *Error, failing t when it is not one.
func refusal(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *client.Error", err, err)
	}
	return e
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	created, err := b.api.CreateAccount(ctx, "alice", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID <= 0 || created.Owner != "alice" || created.Balance != 1000 || created.OpeningBalance != 1000 || created.CreatedAt.IsZero() {
		t.Fatalf("created %+v", created)
	}
	dep, err := b.api.Deposit(ctx, created.ID, 500)
	if err != nil {
		t.Fatal(err)
	}
	if dep.AccountID != created.ID || dep.Kind != "deposit" || dep.Amount != 500 || dep.Balance != 1500 || dep.FenceToken != 0 {
		t.Fatalf("deposit %+v", dep)
	}
	wd, err := b.api.Withdraw(ctx, created.ID, client.Withdrawal{Amount: 200, Strategy: "lease"})
	if err != nil {
		t.Fatal(err)
	}
	if wd.Kind != "withdrawal" || wd.Amount != 200 || wd.Balance != 1300 || wd.Strategy != "lease" || wd.FenceToken <= 0 {
		t.Fatalf("lease withdrawal %+v; want its fencing token", wd)
	}
	got, err := b.api.Account(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balance != 1300 || got.OpeningBalance != 1000 || got.FenceToken != wd.FenceToken {
		t.Fatalf("account %+v after +500 −200 (token %d)", got, wd.FenceToken)
	}
}

// TestCallOptions: the per-call headers reach bankd, and CaptureResponse
// shows what the answer said beside its body.
func TestCallOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, err := b.api.CreateAccount(ctx, "bob", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var first, second client.Response
	e1, err := b.api.Withdraw(ctx, a.ID, client.Withdrawal{Amount: 300}, client.IdempotencyKey("rent"), client.RequestID("req-1"), client.CaptureResponse(&first))
	if err != nil {
		t.Fatal(err)
	}
	e2, err := b.api.Withdraw(ctx, a.ID, client.Withdrawal{Amount: 300}, client.IdempotencyKey("rent"), client.CaptureResponse(&second))
	if err != nil {
		t.Fatal(err)
	}
	if first.StatusCode != http.StatusCreated || first.Replayed || first.RequestID != "req-1" {
		t.Fatalf("first answer %+v; want 201, not replayed, request id req-1", first)
	}
	if !second.Replayed || e2.ID != e1.ID || e2.IdempotencyKey != "rent" || second.RequestID == "" {
		t.Fatalf("retry %+v (entry %d, first %d); want the replayed entry", second, e2.ID, e1.ID)
	}
	if after, _ := b.api.Account(ctx, a.ID); after.Balance != 700 {
		t.Fatalf("balance %d after a withdrawal of 300 sent twice with one key; want 700", after.Balance)
	}
	t.Run("APIKey", func(t *testing.T) {
		keyed := client.New(b.url, client.WithAPIKey("k-123"))
		if _, err := keyed.Account(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		var auth []string
		for _, r := range b.seen.all() {
			auth = append(auth, r.Header.Get("Authorization"))
		}
		if auth[len(auth)-1] != "Bearer k-123" || auth[0] != "" {
			t.Fatalf("Authorization headers %q; want none without the option, Bearer k-123 with it", auth)
		}
	})
	t.Run("FencingToken", func(t *testing.T) {
		resource := "account:" + strconv.FormatInt(a.ID, 10)
		old, err := b.api.Acquire(ctx, resource, client.LockRequest{Holder: "node-a", TTL: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		// Waits out node-a's lease.
		newer, err := b.api.Acquire(ctx, resource, client.LockRequest{Holder: "node-b", TTL: 10 * time.Second, Wait: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.api.Deposit(ctx, a.ID, 1, client.FencingToken(old.Token))
		if e := refusal(t, err); e.Code != "stale_fencing_token" || e.Status != http.StatusConflict {
			t.Fatalf("deposit with the older token %d: %+v; want 409 stale_fencing_token", old.Token, e)
		}
		entry, err := b.api.Deposit(ctx, a.ID, 1, client.FencingToken(newer.Token))
		if err != nil || entry.FenceToken != newer.Token {
			t.Fatalf("deposit with the newest token %d: %+v, %v", newer.Token, entry, err)
		}
	})
}

// TestProblems: every refusal is an *Error with the problem's fields, and
// an answer that is not problem+json is one too, without a code.
func TestProblems(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, err := b.api.CreateAccount(ctx, "carol", 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("InsufficientFunds", func(t *testing.T) {
		var resp client.Response
		_, err := b.api.Withdraw(ctx, a.ID, client.Withdrawal{Amount: 101}, client.RequestID("req-poor"), client.CaptureResponse(&resp))
		e := refusal(t, err)
		if e.Status != 409 || e.Code != "insufficient_funds" || e.Title != "Insufficient funds" ||
			e.Type != "urn:lockbank:problem:insufficient_funds" || !strings.Contains(e.Detail, "less than the amount 101") ||
			e.RequestID != "req-poor" || resp.StatusCode != 409 || client.ErrorCode(err) != "insufficient_funds" {
			t.Fatalf("refusal %+v (response %+v)", e, resp)
		}
	})
	t.Run("AccountNotFound", func(t *testing.T) {
		_, err := b.api.Account(ctx, a.ID+1000)
		if e := refusal(t, err); e.Status != 404 || e.Code != "account_not_found" {
			t.Fatalf("refusal %+v", e)
		}
	})
	t.Run("LockHeld", func(t *testing.T) {
		first, err := b.api.Acquire(ctx, "printer", client.LockRequest{Holder: "alpha", TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.api.Acquire(ctx, "printer", client.LockRequest{Holder: "beta", TTL: time.Second})
		e := refusal(t, err)
		if e.Status != 409 || e.Code != "lock_held" || e.Holder != "alpha" || !e.ExpiresAt.Equal(first.ExpiresAt) || e.RetryAfter < 29*time.Second {
			t.Fatalf("refusal %+v; want lock_held by alpha until %s, Retry-After about 30s", e, first.ExpiresAt)
		}
	})
	t.Run("NotProblemJSON", func(t *testing.T) {
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "7")
			http.Error(w, "upstream went away", http.StatusBadGateway)
		}))
		defer proxy.Close()
		_, err := client.New(proxy.URL).Account(ctx, 1)
		e := refusal(t, err)
		if e.Status != 502 || e.Code != "" || e.Detail != "upstream went away" || e.RetryAfter != 7*time.Second || client.ErrorCode(err) != "" {
			t.Fatalf("refusal %+v", e)
		}
	})
	t.Run("NoAnswer", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		_, err := client.New(gone.URL).Account(ctx, 1)
		var e *client.Error
		if err == nil || errors.As(err, &e) {
			t.Fatalf("a server that is gone: %v; want an error that is not an answer", err)
		}
	})
}

// TestLedger: the iterator reads every page in order, stops asking when
// the caller stops, and yields a refusal once.
func TestLedger(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	a, err := b.api.CreateAccount(ctx, "dave", 0)
	if err != nil {
		t.Fatal(err)
	}
	for amount := int64(1); amount <= 25; amount++ {
		if _, err := b.api.Deposit(ctx, a.ID, amount); err != nil {
			t.Fatal(err)
		}
	}
	ledgerRequests := func() (n int) {
		for _, r := range b.seen.all() {
			if strings.HasSuffix(r.URL.Path, "/ledger") {
				n++
			}
		}
		return n
	}

	var amounts []int64
	var lastID int64
	for e, err := range b.api.Ledger(ctx, a.ID, client.PageSize(10)) {
		if err != nil {
			t.Fatal(err)
		}
		if e.ID <= lastID {
			t.Fatalf("entry %d after %d: not oldest first", e.ID, lastID)
		}
		lastID = e.ID
		amounts = append(amounts, e.Amount)
	}
	if len(amounts) != 25 || amounts[0] != 1 || amounts[24] != 25 || ledgerRequests() != 3 {
		t.Fatalf("amounts %v in %d requests; want 1…25 in 3 pages of 10", amounts, ledgerRequests())
	}

	seen := 0
	for _, err := range b.api.Ledger(ctx, a.ID, client.PageSize(10)) {
		if err != nil {
			t.Fatal(err)
		}
		if seen++; seen == 12 {
			break
		}
	}
	if got := ledgerRequests(); got != 3+2 {
		t.Fatalf("%d ledger requests after a break at the 12th entry; want 2 more pages, not 3", got-3)
	}

	page, err := b.api.LedgerPage(ctx, a.ID, 0, 10)
	if err != nil || len(page.Entries) != 10 || page.NextAfter != page.Entries[9].ID {
		t.Fatalf("first page: %d entries, next after %d, %v", len(page.Entries), page.NextAfter, err)
	}
	last, err := b.api.LedgerPage(ctx, a.ID, lastID-5, 10)
	if err != nil || len(last.Entries) != 5 || last.NextAfter != 0 {
		t.Fatalf("last page: %d entries, next after %d, %v; want 5 and no next", len(last.Entries), last.NextAfter, err)
	}

	errs := 0
	for e, err := range b.api.Ledger(ctx, a.ID+1000) {
		if errs++; client.ErrorCode(err) != "account_not_found" || e.ID != 0 {
			t.Fatalf("ledger of a missing account yielded %+v, %v", e, err)
		}
	}
	if errs != 1 {
		t.Fatalf("ledger of a missing account yielded %d times; want its refusal once", errs)
	}
}

func TestLocks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	lease, err := b.api.Acquire(ctx, "invoice:42", client.LockRequest{Holder: "worker-1", TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Resource != "invoice:42" || lease.Holder != "worker-1" || lease.Token <= 0 || lease.ID == "" || lease.TTL != 5*time.Second ||
		time.Until(lease.Deadline()) > 5*time.Second || time.Until(lease.Deadline()) < 4*time.Second {
		t.Fatalf("lease %+v, deadline in %s", lease, time.Until(lease.Deadline()))
	}
	status, err := b.api.Lock(ctx, "invoice:42")
	if err != nil || !status.Held || status.Holder != "worker-1" || status.Token != lease.Token || status.Remaining <= 0 || status.Remaining > 5*time.Second {
		t.Fatalf("status %+v, %v", status, err)
	}
	list, err := b.api.Locks(ctx)
	if err != nil || len(list) != 1 || list[0].Resource != "invoice:42" {
		t.Fatalf("locks %+v, %v", list, err)
	}
	renewed, err := b.api.Renew(ctx, "invoice:42", lease.ID, 10*time.Second)
	if err != nil || renewed.Token != lease.Token || renewed.ID != lease.ID || renewed.TTL != 10*time.Second || !renewed.ExpiresAt.After(lease.ExpiresAt) {
		t.Fatalf("renewed %+v, %v; want the same token, a later expiry", renewed, err)
	}
	var resp client.Response
	if err := b.api.Release(ctx, "invoice:42", lease.ID, client.CaptureResponse(&resp)); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("release: %v (%d)", err, resp.StatusCode)
	}
	if err := b.api.Release(ctx, "invoice:42", lease.ID); err != nil {
		t.Fatalf("second release: %v; want it harmless", err)
	}
	if status, err := b.api.Lock(ctx, "invoice:42"); err != nil || status.Held {
		t.Fatalf("after release: %+v, %v", status, err)
	}
	if _, err := b.api.Renew(ctx, "invoice:42", lease.ID, time.Second); client.ErrorCode(err) != "lease_lost" {
		t.Fatalf("renew after release: %v; want lease_lost", err)
	}
	if _, err := b.api.Lock(ctx, "never-locked"); client.ErrorCode(err) != "lock_not_found" {
		t.Fatalf("a lock never taken: %v; want lock_not_found", err)
	}

	t.Run("AcquireWaits", func(t *testing.T) {
		short, err := b.api.Acquire(ctx, "queue", client.LockRequest{Holder: "a", TTL: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		next, err := b.api.Acquire(ctx, "queue", client.LockRequest{Holder: "b", TTL: time.Second, Wait: 10 * time.Second})
		if err != nil || next.Token <= short.Token || next.Holder != "b" {
			t.Fatalf("waiting acquire: %+v, %v; want b's grant after a's lease ran out", next, err)
		}
		if err := b.api.Release(ctx, "queue", short.ID); client.ErrorCode(err) != "not_holder" {
			t.Fatalf("a releasing after b's grant: %v; want not_holder", err)
		}
	})
}

func TestKeepAlive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	// Long enough that a renewal on a loaded machine (a third of it in) is
	// answered well before the lease's deadline.
	const ttl = time.Second
	t.Run("Renews", func(t *testing.T) {
		t.Parallel()
		lease, err := b.api.Acquire(ctx, "renewed", client.LockRequest{Holder: "w", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		k := b.api.KeepAlive(ctx, lease)
		t.Cleanup(k.Stop)
		time.Sleep(3 * ttl) // time passing is what is under test: three TTLs
		status, err := b.api.Lock(ctx, "renewed")
		if err != nil || !status.Held || status.Token != lease.Token || k.Err() != nil || !k.Lease().ExpiresAt.After(lease.ExpiresAt) {
			t.Fatalf("after 3 TTLs: %+v, %v, keepalive %v; want held with token %d, renewed", status, err, k.Err(), lease.Token)
		}
		k.Stop()
		if !errors.Is(k.Err(), context.Canceled) {
			t.Fatalf("after Stop: %v", k.Err())
		}
	})
	t.Run("LossEndsTheContext", func(t *testing.T) {
		t.Parallel()
		lease, err := b.api.Acquire(ctx, "lost", client.LockRequest{Holder: "w", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		k := b.api.KeepAlive(ctx, lease)
		t.Cleanup(k.Stop)
		// Someone with the lease id releases it: the next renewal is refused.
		if err := b.api.Release(ctx, "lost", lease.ID); err != nil {
			t.Fatal(err)
		}
		select {
		case <-k.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the keepalive's context did not end after its lease was released")
		}
		if !errors.Is(k.Err(), client.ErrLeaseLost) || client.ErrorCode(k.Err()) != "lease_lost" {
			t.Fatalf("cause %v; want ErrLeaseLost with the lease_lost refusal", k.Err())
		}
	})
	t.Run("NoAnswerUntilTheDeadline", func(t *testing.T) {
		t.Parallel()
		lease, err := b.api.Acquire(ctx, "unreachable", client.LockRequest{Holder: "w", TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		k := client.New(gone.URL).KeepAlive(ctx, lease)
		t.Cleanup(k.Stop)
		select {
		case <-k.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the keepalive's context did not end with no renewal possible")
		}
		if !errors.Is(k.Err(), client.ErrLeaseLost) || time.Now().Before(lease.Deadline()) {
			t.Fatalf("cause %v at %s before the deadline; want ErrLeaseLost at the deadline", k.Err(), time.Until(lease.Deadline()))
		}
	})
}
