// Package history is lockbank's Jepsen-style bank test: clients run
// random deposits, withdrawals and reads against bankd nodes while faults
// are injected (Workload); every operation is recorded as the client saw it,
// attempt by attempt (Recorder), into a history; the history is judged
// against the accounts' final ledgers, rule by named rule (Check); and it
// can be drawn (WritePlot) and saved (WriteFile).
//
// The rules, and what each catches:
//
//	money          balance, entry-balance, negative-balance
//	exactly once   at-most-once, acknowledged-in-ledger, refused-not-in-ledger,
//	               entry-without-operation, entry-matches-operation
//	reads          read-negative, read-lower-bound, read-upper-bound
//	fences         fence
//	the ledger     append-only
//
// An operation's outcome is ok (applied), fail (refused: nothing was
// applied, nor ever will be) or info (unknown: it may or may not have been
// applied). A write whose outcome is unknown is retried with the same
// Idempotency-Key, so a write is a list of attempts; Settle sums them up.
package history

// Op is one operation of a check's history, as the client saw it: invoked at
// Invoke, answered at Complete with Outcome ok (applied), fail (refused, so
// not applied) or info (unknown: timed out or dropped; it may or may not
// have been applied, now or later).
//
// A write may take several attempts: the client retries an unknown outcome
// with the same Idempotency-Key, on another node. Then Attempts holds each
// request and the fields above sum them up (Settle).
type Op struct {
	Index    int     `json:"index"`
	Client   int     `json:"client"`
	Kind     string  `json:"kind"` // deposit, withdrawal, read, ledger
	Account  int64   `json:"account"`
	Amount   int64   `json:"amount,omitempty"`
	Key      string  `json:"key,omitempty"`
	Strategy string  `json:"strategy,omitempty"`
	Hold     int64   `json:"hold_ms,omitempty"` // a lease withdrawal's pause inside its lease
	Node     string  `json:"node"`
	Invoke   float64 `json:"invoke"`
	Complete float64 `json:"complete"`
	Outcome  string  `json:"outcome"`
	Code     string  `json:"code,omitempty"`
	Balance  int64   `json:"balance,omitempty"` // a read's answer
	Token    int64   `json:"token,omitempty"`
	// A ledger read's answer, in short: how many entries, and a digest of them.
	Entries  int       `json:"entries,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one request of a write: the same body and Idempotency-Key each
// time, to whichever node.
type Attempt struct {
	Node     string  `json:"node"`
	Invoke   float64 `json:"invoke"`
	Complete float64 `json:"complete"`
	Outcome  string  `json:"outcome"`
	Code     string  `json:"code,omitempty"`
	Replayed bool    `json:"replayed,omitempty"` // the answer was the stored outcome of an earlier attempt
}

// Outcomes.
const (
	OutcomeOK   = "ok"
	OutcomeFail = "fail"
	OutcomeInfo = "info"
)

// Settle sums up a write's attempts: it was invoked with the first and
// answered with the last. It is acknowledged (ok) when any attempt was
// answered ok; refused (fail) only when every attempt was refused, since an
// attempt that went unanswered may still land after a later one was
// refused; else unknown (info). Idempotency promises that all the attempts
// together apply the change at most once.
func Settle(o *Op) {
	if len(o.Attempts) == 0 {
		return
	}
	first, last := o.Attempts[0], o.Attempts[len(o.Attempts)-1]
	o.Node, o.Invoke, o.Complete, o.Code = first.Node, first.Invoke, last.Complete, last.Code
	o.Outcome = OutcomeFail
	for _, a := range o.Attempts {
		switch a.Outcome {
		case OutcomeOK:
			o.Outcome = OutcomeOK
		case OutcomeInfo:
			if o.Outcome == OutcomeFail {
				o.Outcome = OutcomeInfo
			}
		}
	}
}

// IsWrite reports whether o changes money: a deposit or a withdrawal.
func IsWrite(o Op) bool { return o.Kind == "deposit" || o.Kind == "withdrawal" }
