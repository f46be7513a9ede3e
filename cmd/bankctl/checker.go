package main

import (
	"fmt"
	"hash/fnv"
	"sort"
)

// op is one operation of a check's history, as the client saw it: invoked at
// Invoke, answered at Complete with Outcome ok (applied), fail (refused, so
// not applied) or info (unknown: timed out or dropped; it may or may not
// have been applied, now or later).
//
// A write may take several attempts: the client retries an unknown outcome
// with the same Idempotency-Key, on another node. Then Attempts holds each
// request and the fields above sum them up (settle).
type op struct {
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
	Attempts []attempt `json:"attempts,omitempty"`
}

// attempt is one request of a write: the same body and Idempotency-Key each
// time, to whichever node.
type attempt struct {
	Node     string  `json:"node"`
	Invoke   float64 `json:"invoke"`
	Complete float64 `json:"complete"`
	Outcome  string  `json:"outcome"`
	Code     string  `json:"code,omitempty"`
	Replayed bool    `json:"replayed,omitempty"` // the answer was the stored outcome of an earlier attempt
}

// Outcomes.
const (
	outcomeOK   = "ok"
	outcomeFail = "fail"
	outcomeInfo = "info"
)

// settle sums up a write's attempts: it was invoked with the first and
// answered with the last. It is acknowledged (ok) when any attempt was
// answered ok; refused (fail) only when every attempt was refused, since an
// attempt that went unanswered may still land after a later one was
// refused; else unknown (info). Idempotency promises that all the attempts
// together apply the change at most once.
func settle(o *op) {
	if len(o.Attempts) == 0 {
		return
	}
	first, last := o.Attempts[0], o.Attempts[len(o.Attempts)-1]
	o.Node, o.Invoke, o.Complete, o.Code = first.Node, first.Invoke, last.Complete, last.Code
	o.Outcome = outcomeFail
	for _, a := range o.Attempts {
		switch a.Outcome {
		case outcomeOK:
			o.Outcome = outcomeOK
		case outcomeInfo:
			if o.Outcome == outcomeFail {
				o.Outcome = outcomeInfo
			}
		}
	}
}

// finalAccount is an account's state after the run: its balance and ledger.
type finalAccount struct {
	ID      int64
	Opening int64
	Balance int64
	Entries []ledgerEntry
}

type ledgerEntry struct {
	ID      int64
	Kind    string
	Amount  int64
	Balance int64 // after the entry
	Key     string
	Token   int64 // 0 when the write carried none
}

type violation struct {
	Account int64  `json:"account"`
	Rule    string `json:"rule"`
	Detail  string `json:"detail"`
}

// The checker's rules, one name each, so that a violation says which broke.
const (
	// Money.
	ruleBalance      = "balance"          // the balance is opening + deposits − withdrawals of the ledger
	ruleEntryBalance = "entry-balance"    // each entry's balance follows from the one before and its amount
	ruleNegative     = "negative-balance" // no entry takes the balance below zero
	// Exactly once, by Idempotency-Key.
	ruleAtMostOnce   = "at-most-once"            // no key has two ledger entries, however many attempts it took
	ruleAcknowledged = "acknowledged-in-ledger"  // a write any attempt of which was answered ok is in the ledger
	ruleRefused      = "refused-not-in-ledger"   // a write every attempt of which was refused is not
	ruleOrphan       = "entry-without-operation" // every entry has a key that some write of the history sent
	ruleMismatch     = "entry-matches-operation" // an entry has its write's account, kind and amount
	// Reads.
	ruleReadNegative = "read-negative"    // no read sees a negative balance
	ruleReadLow      = "read-lower-bound" // a read sees at least what the writes around it allow
	ruleReadHigh     = "read-upper-bound" // and at most that
	// Fences and the ledger's history.
	ruleFence      = "fence"       // fencing tokens never go down in ledger order
	ruleAppendOnly = "append-only" // every ledger read is the beginning of the final ledger
)

// checkHistory judges a history against the final accounts and returns
// every violation of the rules above.
func checkHistory(ops []op, finals []finalAccount) []violation {
	ops = append([]op(nil), ops...)
	for i := range ops {
		settle(&ops[i])
	}
	var out []violation
	add := func(account int64, rule, format string, args ...any) {
		out = append(out, violation{Account: account, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	writes := map[string]op{} // by idempotency key
	for _, o := range ops {
		if isWrite(o) {
			writes[o.Key] = o
		}
	}
	type accountKey struct {
		account int64
		key     string
	}
	inLedger := map[accountKey]int{}
	for _, a := range finals {
		running := a.Opening
		var lastToken int64
		for _, e := range a.Entries {
			switch e.Kind {
			case "deposit":
				running += e.Amount
			case "withdrawal":
				running -= e.Amount
			}
			if e.Balance != running {
				add(a.ID, ruleEntryBalance, "entry %d says balance %d after it; the entries up to it make %d", e.ID, e.Balance, running)
			}
			if running < 0 {
				add(a.ID, ruleNegative, "entry %d takes the balance to %d", e.ID, running)
			}
			if e.Token != 0 {
				if e.Token < lastToken {
					add(a.ID, ruleFence, "entry %d was written with token %d after a write with token %d", e.ID, e.Token, lastToken)
				}
				lastToken = max(lastToken, e.Token)
			}
			o, known := writes[e.Key]
			if e.Key == "" || !known {
				add(a.ID, ruleOrphan, "ledger entry %d (key %q) belongs to no operation", e.ID, e.Key)
				continue
			}
			if inLedger[accountKey{a.ID, e.Key}]++; inLedger[accountKey{a.ID, e.Key}] == 2 {
				add(a.ID, ruleAtMostOnce, "key %q has a second ledger entry, %d (%d attempts)", e.Key, e.ID, max(1, len(o.Attempts)))
			}
			if o.Account != a.ID || o.Kind != e.Kind || o.Amount != e.Amount {
				add(a.ID, ruleMismatch, "entry %d (%s %d) does not match its operation (%s %d on account %d)", e.ID, e.Kind, e.Amount, o.Kind, o.Amount, o.Account)
			}
			if o.Outcome == outcomeFail {
				add(a.ID, ruleRefused, "operation %d was refused (%s) but is in the ledger as entry %d", o.Index, o.Code, e.ID)
			}
		}
		if running != a.Balance {
			add(a.ID, ruleBalance, "balance %d, but opening %d and the ledger make %d", a.Balance, a.Opening, running)
		}
	}
	for _, o := range ops {
		if isWrite(o) && o.Outcome == outcomeOK && inLedger[accountKey{o.Account, o.Key}] == 0 {
			add(o.Account, ruleAcknowledged, "operation %d (%s %d, key %q) was acknowledged but is not in the ledger", o.Index, o.Kind, o.Amount, o.Key)
		}
	}
	out = append(out, checkReads(ops, finals)...)
	out = append(out, checkLedgerReads(ops, finals)...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

func isWrite(o op) bool { return o.Kind == "deposit" || o.Kind == "withdrawal" }

// checkReads bounds every ok read: writes acknowledged before the read was
// invoked must be in it; writes invoked before it completed, and not
// refused, may be; nothing else can be.
func checkReads(ops []op, finals []finalAccount) []violation {
	var out []violation
	opening := map[int64]int64{}
	for _, a := range finals {
		opening[a.ID] = a.Opening
	}
	for _, r := range ops {
		if r.Kind != "read" || r.Outcome != outcomeOK {
			continue
		}
		if r.Balance < 0 {
			out = append(out, violation{r.Account, ruleReadNegative, fmt.Sprintf("read %d saw a negative balance %d", r.Index, r.Balance)})
		}
		lo, hi := opening[r.Account], opening[r.Account]
		for _, w := range ops {
			if !isWrite(w) || w.Account != r.Account || w.Outcome == outcomeFail {
				continue
			}
			certain := w.Outcome == outcomeOK && w.Complete < r.Invoke
			possible := w.Invoke < r.Complete
			switch {
			case w.Kind == "deposit" && certain:
				lo += w.Amount
				hi += w.Amount
			case w.Kind == "deposit" && possible:
				hi += w.Amount
			case w.Kind == "withdrawal" && certain:
				lo -= w.Amount
				hi -= w.Amount
			case w.Kind == "withdrawal" && possible:
				lo -= w.Amount
			}
		}
		if r.Balance < lo {
			out = append(out, violation{r.Account, ruleReadLow, fmt.Sprintf("read %d saw %d; the writes around it allow %d at least", r.Index, r.Balance, lo)})
		}
		if r.Balance > hi {
			out = append(out, violation{r.Account, ruleReadHigh, fmt.Sprintf("read %d saw %d; the writes around it allow %d at most", r.Index, r.Balance, hi)})
		}
	}
	return out
}

// ledgerDigest summarises a ledger prefix, so that a history can say what a
// ledger read saw without carrying every entry.
func ledgerDigest(entries []ledgerEntry) string {
	h := fnv.New64a()
	for _, e := range entries {
		fmt.Fprintf(h, "%d|%s|%d|%d|%s|%d;", e.ID, e.Kind, e.Amount, e.Balance, e.Key, e.Token)
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// checkLedgerReads: the ledger is append-only, so what any read saw must be
// exactly the beginning of the final ledger.
func checkLedgerReads(ops []op, finals []finalAccount) []violation {
	var out []violation
	final := map[int64][]ledgerEntry{}
	for _, a := range finals {
		final[a.ID] = a.Entries
	}
	for _, r := range ops {
		if r.Kind != "ledger" || r.Outcome != outcomeOK {
			continue
		}
		entries := final[r.Account]
		if r.Entries > len(entries) || ledgerDigest(entries[:r.Entries]) != r.Digest {
			out = append(out, violation{r.Account, ruleAppendOnly, fmt.Sprintf("ledger read %d saw %d entries that are not the beginning of the final ledger (%d entries)", r.Index, r.Entries, len(entries))})
		}
	}
	return out
}
