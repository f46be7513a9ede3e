package web

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
)

type createAccountRequest struct {
	Owner   string `json:"owner"`
	Balance int64  `json:"balance"`
}

func handleCreateAccount(accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, err := decode[createAccountRequest](w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		a, err := accounts.CreateForKey(r.Context(), leaseOwner(r.Context()), req.Owner, req.Balance)
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Location", "/v1/accounts/"+strconv.FormatInt(a.ID, 10))
		encode(w, http.StatusCreated, a)
	}
}

func handleGetAccount(accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err == nil {
			err = checkAccountAccess(r.Context(), accounts, id)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		a, err := accounts.Get(r.Context(), id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, http.StatusOK, a)
	}
}

type depositRequest struct {
	Amount int64 `json:"amount"`
}

func handleDeposit(accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, req, err := decodeChange[depositRequest](w, r, accounts)
		if err != nil {
			writeError(w, r, err)
			return
		}
		c.Amount = req.Amount
		res, err := accounts.Deposit(r.Context(), c)
		writeChange(w, r, res, err)
	}
}

type withdrawRequest struct {
	Amount int64 `json:"amount"`
	// Strategy absent means row; present but empty is refused.
	Strategy *string `json:"strategy"`
	// HoldMS is the demo-mode pause between read and write.
	HoldMS int64 `json:"hold_ms"`
}

func handleWithdraw(accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, req, err := decodeChange[withdrawRequest](w, r, accounts)
		if err != nil {
			writeError(w, r, err)
			return
		}
		c.Amount, c.Strategy, c.Hold = req.Amount, account.StrategyRow, holdDuration(req.HoldMS)
		if req.Strategy != nil {
			c.Strategy = account.Strategy(*req.Strategy)
		}
		note := noteFrom(r.Context())
		note.strategy, note.fencingToken = string(c.Strategy), c.FenceToken
		res, err := accounts.Withdraw(r.Context(), c)
		writeChange(w, r, res, err)
	}
}

// decodeChange reads what deposits and withdrawals share — the account id,
// the Idempotency-Key and Fencing-Token headers — decodes the body as T, and
// checks that the caller may change the account. The check comes last, where
// a missing account is found, so that another's account and a missing one
// get the same answers.
func decodeChange[T any](w http.ResponseWriter, r *http.Request, accounts *account.Service) (account.Change, T, error) {
	var (
		c   account.Change
		req T
		err error
	)
	if c.AccountID, err = accountID(r); err != nil {
		return c, req, err
	}
	if req, err = decode[T](w, r); err != nil {
		return c, req, err
	}
	if c.IdempotencyKey, err = idempotencyKey(r); err != nil {
		return c, req, err
	}
	if c.FenceToken, err = fencingToken(r); err != nil {
		return c, req, err
	}
	return c, req, checkAccountAccess(r.Context(), accounts, c.AccountID)
}

// writeChange answers a deposit or withdrawal: 201 with the ledger entry, or
// the refusal; either way marked when it replays a stored outcome.
func writeChange(w http.ResponseWriter, r *http.Request, res account.Result, err error) {
	noteFrom(r.Context()).batchSize = res.BatchSize
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	encode(w, http.StatusCreated, res.Entry)
}

type ledgerResponse struct {
	Entries []account.Entry `json:"entries"`
	// NextAfter is set when more entries follow: pass it as ?after= to read them.
	NextAfter *int64 `json:"next_after,omitempty"`
}

const (
	defaultLedgerLimit = 1000
	maxLedgerLimit     = 10000
)

func handleLedger(accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := accountID(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		after, err := queryInt(r, "after", 0, 0, 1<<62)
		if err != nil {
			writeError(w, r, err)
			return
		}
		limit, err := queryInt(r, "limit", defaultLedgerLimit, 1, maxLedgerLimit)
		if err == nil {
			err = checkAccountAccess(r.Context(), accounts, id)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		// One extra row tells whether another page follows.
		entries, err := accounts.Ledger(r.Context(), id, after, int(limit)+1)
		if err != nil {
			writeError(w, r, err)
			return
		}
		resp := ledgerResponse{Entries: entries}
		if len(entries) > int(limit) {
			resp.Entries = entries[:limit]
			resp.NextAfter = &resp.Entries[limit-1].ID
		}
		if resp.Entries == nil {
			resp.Entries = []account.Entry{}
		}
		encode(w, http.StatusOK, resp)
	}
}

// accountID parses the {id} path segment: a positive integer that fits int64.
func accountID(r *http.Request) (int64, error) {
	raw := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, &account.Error{Code: account.CodeAccountNotFound, Message: "account ids are positive integers; " + strconv.Quote(raw) + " names no account"}
	}
	return id, nil
}

// idempotencyKey returns the Idempotency-Key header: "" when absent, an
// error when present but empty, repeated, or not 1–255 printable characters.
func idempotencyKey(r *http.Request) (string, error) {
	values, present := r.Header["Idempotency-Key"]
	if !present {
		return "", nil
	}
	if len(values) != 1 || values[0] == "" {
		return "", &account.Error{Code: account.CodeInvalidIdempotencyKey, Message: "Idempotency-Key must be one value of 1 to 255 printable characters"}
	}
	return values[0], account.ValidateIdempotencyKey(values[0])
}

// fencingToken returns the Fencing-Token header: 0 when absent, else a
// positive integer.
func fencingToken(r *http.Request) (int64, error) {
	values, present := r.Header["Fencing-Token"]
	if !present {
		return 0, nil
	}
	if len(values) == 1 {
		if n, err := strconv.ParseInt(values[0], 10, 64); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, &account.Error{Code: codeInvalidFencingToken, Message: "Fencing-Token must be one positive integer: the token of your lease"}
}

func queryInt(r *http.Request, name string, def, min, max int64) (int64, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < min || n > max {
		return 0, &account.Error{Code: account.CodeInvalidRequest, Message: name + " must be an integer from " + strconv.FormatInt(min, 10) + " to " + strconv.FormatInt(max, 10)}
	}
	return n, nil
}

// holdDuration converts hold_ms, mapping values out of range to durations that
// are out of range too, so the domain refuses them and huge ones cannot wrap
// around into a valid Duration.
func holdDuration(ms int64) time.Duration {
	switch {
	case ms < 0:
		return -time.Millisecond
	case ms > account.MaxHold.Milliseconds():
		return account.MaxHold + time.Millisecond
	}
	return time.Duration(ms) * time.Millisecond
}
