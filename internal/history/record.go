package history

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/lockbank/lockbank/client"
)

// Node is a bankd node as the workload sees it: a name and a client.
type Node struct {
	Name string
	API  *client.Client
}

// MaxAttempts bounds the retries of a write whose outcome is unknown, or
// that was refused for want of the database or a lock: at most this many
// attempts in all, each on the next node, the same body and
// Idempotency-Key each time.
const MaxAttempts = 4

// Recorder performs operations and records them into a history, numbered in
// the order their answers came. It is safe for concurrent use.
type Recorder struct {
	start  time.Time
	window context.Context // the run's window: no retries after it

	mu  sync.Mutex
	ops []Op
}

// NewRecorder starts a history now; retries stop when window ends.
func NewRecorder(window context.Context) *Recorder {
	return &Recorder{start: time.Now(), window: window}
}

// Since is the time since the history started, in seconds: the clock of
// every Invoke and Complete.
func (r *Recorder) Since() float64 { return time.Since(r.start).Seconds() }

// Record adds o to the history and returns how many operations it holds.
func (r *Recorder) Record(o Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	o.Index = len(r.ops)
	r.ops = append(r.ops, o)
	return len(r.ops)
}

// Ops is the history so far.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

// Perform runs o, starting on its node. A read is one request. A write is
// retried, while the run's window lasts, when its outcome is unknown (no
// answer, a timeout, 503 outcome_unknown, 500) or it was refused for want
// of the database or a lock (503 database_unavailable, lock_timeout): with
// the same body and Idempotency-Key, on the next of nodes, up to
// MaxAttempts in all. The idempotency record makes the attempts together
// apply it at most once. It does not record o.
func (r *Recorder) Perform(ctx context.Context, o *Op, nodes []Node, timeout time.Duration) {
	next := 0
	for i, n := range nodes {
		if n.Name == o.Node {
			next = i
		}
	}
	if !IsWrite(*o) {
		a := r.Attempt(ctx, nodes[next], o, timeout)
		o.Invoke, o.Complete, o.Outcome, o.Code = a.Invoke, a.Complete, a.Outcome, a.Code
		return
	}
	for i := 1; ; i++ {
		a := r.Attempt(ctx, nodes[next], o, timeout)
		o.Attempts = append(o.Attempts, a)
		retry := a.Outcome == OutcomeInfo || a.Code == "database_unavailable" || a.Code == "lock_timeout"
		if !retry || i == MaxAttempts || r.window.Err() != nil {
			break
		}
		select {
		case <-r.window.Done():
		case <-time.After(time.Duration(i) * 150 * time.Millisecond):
		}
		next = (next + 1) % len(nodes)
	}
	Settle(o)
}

// Attempt sends o to n once and classifies the answer: ok (applied), fail
// (a refusal: nothing was applied, nor ever will be by this request) or
// info (no answer, or an answer that does not say whether anything was
// applied). An ok answer's balance and token go into o (a read: the
// account's; a write: its entry's), a ledger read's length and digest too.
func (r *Recorder) Attempt(ctx context.Context, n Node, o *Op, timeout time.Duration) Attempt {
	a := Attempt{Node: n.Name, Invoke: r.Since()}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		resp           client.Response
		answer         = client.CaptureResponse(&resp)
		balance, token int64
		err            error
	)
	switch o.Kind {
	case "read":
		var acct client.Account
		acct, err = n.API.Account(ctx, o.Account, answer)
		balance, token = acct.Balance, acct.FenceToken
	case "ledger":
		var page client.LedgerPage
		page, err = n.API.LedgerPage(ctx, o.Account, 0, 10000, answer)
		if err == nil {
			entries := make([]Entry, 0, len(page.Entries))
			for _, e := range page.Entries {
				entries = append(entries, entryOf(e))
			}
			o.Entries, o.Digest = len(entries), Digest(entries)
		}
	case "deposit":
		var e client.Entry
		e, err = n.API.Deposit(ctx, o.Account, o.Amount, client.IdempotencyKey(o.Key), answer)
		balance, token = e.Balance, e.FenceToken
	default:
		var e client.Entry
		w := client.Withdrawal{Amount: o.Amount, Strategy: o.Strategy, Hold: time.Duration(o.Hold) * time.Millisecond}
		e, err = n.API.Withdraw(ctx, o.Account, w, client.IdempotencyKey(o.Key), answer)
		balance, token = e.Balance, e.FenceToken
	}
	a.Complete, a.Replayed = r.Since(), resp.Replayed
	var refusal *client.Error
	switch {
	case err == nil:
		a.Outcome = OutcomeOK
		o.Balance, o.Token = balance, token
	case !errors.As(err, &refusal):
		a.Outcome, a.Code = OutcomeInfo, "no_answer"
	case refusal.Status >= 400 && refusal.Status < 500, refusal.Code == "lock_timeout", refusal.Code == "database_unavailable":
		// Refusals, and 503s that bankd gives only when nothing was committed.
		a.Outcome, a.Code = OutcomeFail, refusal.Code
	default:
		a.Outcome, a.Code = OutcomeInfo, refusal.Code
	}
	return a
}
