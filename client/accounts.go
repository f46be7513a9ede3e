package client

import (
	"context"
	"iter"
	"net/url"
	"strconv"
	"time"
)

// Account is one bank account. Amounts are integers in minor units.
type Account struct {
	ID             int64  `json:"id"`
	Owner          string `json:"owner"`
	Balance        int64  `json:"balance"`
	OpeningBalance int64  `json:"opening_balance"`
	Currency       string `json:"currency"`
	// FenceToken is the highest fencing token that has written to the
	// account (0 for none).
	FenceToken int64     `json:"fence_token"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Entry is one line of an account's ledger: a deposit or a withdrawal and
// the balance right after it.
type Entry struct {
	ID        int64  `json:"id"`
	AccountID int64  `json:"account_id"`
	Kind      string `json:"kind"` // deposit or withdrawal
	Amount    int64  `json:"amount"`
	Balance   int64  `json:"balance"`
	Strategy  string `json:"strategy"`
	// FenceToken is the fencing token the change was written with; 0 when it
	// carried none (tokens are positive).
	FenceToken     int64     `json:"fence_token"`
	IdempotencyKey string    `json:"idempotency_key"`
	CreatedAt      time.Time `json:"created_at"`
}

// Withdrawal is what a withdrawal asks for.
type Withdrawal struct {
	Amount int64
	// Strategy is row (the default when empty), lease, or in demo mode
	// unsafe and lease-nofence.
	Strategy string
	// Hold is the demo mode's pause between reading and writing the balance.
	Hold time.Duration
}

// LedgerPage is one page of a ledger, oldest entry first.
type LedgerPage struct {
	Entries []Entry `json:"entries"`
	// NextAfter is the after of the next page; 0 when this page is the last.
	NextAfter int64 `json:"next_after"`
}

func accountPath(id int64) string { return "/v1/accounts/" + strconv.FormatInt(id, 10) }

// CreateAccount opens an account for owner with an opening balance.
// Refusals: invalid_request, invalid_amount.
func (c *Client) CreateAccount(ctx context.Context, owner string, balance int64, opts ...CallOption) (Account, error) {
	in := struct {
		Owner   string `json:"owner"`
		Balance int64  `json:"balance"`
	}{owner, balance}
	var a Account
	err := c.do(ctx, "POST", "/v1/accounts", nil, in, &a, newCall(opts))
	return a, err
}

// Account reads account id. Refusals: account_not_found.
func (c *Client) Account(ctx context.Context, id int64, opts ...CallOption) (Account, error) {
	var a Account
	err := c.do(ctx, "GET", accountPath(id), nil, nil, &a, newCall(opts))
	return a, err
}

// Deposit adds amount to account id and returns its ledger entry. Options:
// IdempotencyKey, FencingToken. Refusals: account_not_found,
// invalid_amount, balance_overflow, idempotency_key_reused, the fence's
// (stale_fencing_token, lease_expired, fencing_token_mismatch), and the
// 503s (lock_timeout, database_unavailable; outcome_unknown when it may
// have been applied).
func (c *Client) Deposit(ctx context.Context, id, amount int64, opts ...CallOption) (Entry, error) {
	in := struct {
		Amount int64 `json:"amount"`
	}{amount}
	var e Entry
	err := c.do(ctx, "POST", accountPath(id)+"/deposits", nil, in, &e, newCall(opts))
	return e, err
}

// Withdraw takes w.Amount from account id with w.Strategy and returns its
// ledger entry. Options: IdempotencyKey, FencingToken. Refusals: those of
// Deposit, and insufficient_funds, unknown_strategy, unsafe_disabled.
func (c *Client) Withdraw(ctx context.Context, id int64, w Withdrawal, opts ...CallOption) (Entry, error) {
	in := struct {
		Amount   int64  `json:"amount"`
		Strategy string `json:"strategy,omitempty"`
		HoldMS   int64  `json:"hold_ms,omitempty"`
	}{w.Amount, w.Strategy, millis(w.Hold)}
	var e Entry
	err := c.do(ctx, "POST", accountPath(id)+"/withdrawals", nil, in, &e, newCall(opts))
	return e, err
}

// LedgerPage reads up to limit entries (1–10000; 0 for bankd's default)
// of account id's ledger with an id above after, oldest first. Refusals:
// account_not_found, invalid_request.
func (c *Client) LedgerPage(ctx context.Context, id, after int64, limit int, opts ...CallOption) (LedgerPage, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p LedgerPage
	err := c.do(ctx, "GET", accountPath(id)+"/ledger", q, nil, &p, newCall(opts))
	return p, err
}

// Ledger iterates over account id's whole ledger, oldest first, reading it
// page by page (PageSize sets the page's size). An error ends the
// iteration: it is yielded once, with a zero Entry. Each page is read in
// one snapshot; entries appended while the iteration runs are seen by the
// later pages.
func (c *Client) Ledger(ctx context.Context, id int64, opts ...CallOption) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		limit := newCall(opts).pageSize
		var after int64
		for {
			page, err := c.LedgerPage(ctx, id, after, limit, opts...)
			if err != nil {
				yield(Entry{}, err)
				return
			}
			for _, e := range page.Entries {
				if !yield(e, nil) {
					return
				}
			}
			if page.NextAfter == 0 {
				return
			}
			after = page.NextAfter
		}
	}
}
