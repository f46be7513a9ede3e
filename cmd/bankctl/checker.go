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
type op struct {
	Index    int     `json:"index"`
	Client   int     `json:"client"`
	Kind     string  `json:"kind"` // deposit, withdrawal, read
	Account  int64   `json:"account"`
	Amount   int64   `json:"amount,omitempty"`
	Key      string  `json:"key,omitempty"`
	Strategy string  `json:"strategy,omitempty"`
	Node     string  `json:"node"`
	Invoke   float64 `json:"invoke"`
	Complete float64 `json:"complete"`
	Outcome  string  `json:"outcome"`
	Code     string  `json:"code,omitempty"`
	Balance  int64   `json:"balance,omitempty"` // a read's answer
	Token    int64   `json:"token,omitempty"`
	// A ledger read's answer, in short: how many entries, and a digest of them.
	Entries int    `json:"entries,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// Outcomes.
const (
	outcomeOK   = "ok"
	outcomeFail = "fail"
	outcomeInfo = "info"
)

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

// checkHistory judges a history against the final accounts. It returns
// every violation of:
//   - money: balance = opening + deposits − withdrawals by the ledger, every
//     entry's balance follows from the one before, and no balance is negative;
//   - exactly once: every ok write is in the ledger exactly once, no failed
//     write is, an info write at most once, no entry belongs to no operation,
//     and no idempotency key has two entries;
//   - reads: never negative, and within the bounds that the ok and ok+info
//     writes invoked before the read allow;
//   - fences: the tokens of fenced writes never go down in ledger order;
//   - append-only: every ledger read is a prefix of the final ledger.
func checkHistory(ops []op, finals []finalAccount) []violation {
	var out []violation
	add := func(account int64, rule, format string, args ...any) {
		out = append(out, violation{Account: account, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	writes := map[string]op{} // by idempotency key
	for _, o := range ops {
		if o.Kind == "deposit" || o.Kind == "withdrawal" {
			writes[o.Key] = o
		}
	}
	for _, a := range finals {
		// Money.
		running := a.Opening
		var lastToken int64
		byKey := map[string][]ledgerEntry{}
		for _, e := range a.Entries {
			switch e.Kind {
			case "deposit":
				running += e.Amount
			case "withdrawal":
				running -= e.Amount
			}
			if e.Balance != running {
				add(a.ID, "money", "entry %d says balance %d after it; the ledger implies %d", e.ID, e.Balance, running)
			}
			if running < 0 {
				add(a.ID, "money", "entry %d takes the balance to %d", e.ID, running)
			}
			if e.Token != 0 {
				if e.Token < lastToken {
					add(a.ID, "fence", "entry %d was written with token %d after a write with token %d", e.ID, e.Token, lastToken)
				}
				lastToken = max(lastToken, e.Token)
			}
			byKey[e.Key] = append(byKey[e.Key], e)
		}
		if running != a.Balance {
			add(a.ID, "money", "balance %d, but opening %d and the ledger make %d", a.Balance, a.Opening, running)
		}
		// Exactly once, from the ledger's side.
		for key, entries := range byKey {
			o, known := writes[key]
			switch {
			case key == "" || !known:
				add(a.ID, "exactly-once", "ledger entry %d (key %q) belongs to no operation", entries[0].ID, key)
			case len(entries) > 1:
				add(a.ID, "exactly-once", "key %q has %d ledger entries", key, len(entries))
			case o.Account != a.ID || o.Kind != entries[0].Kind || o.Amount != entries[0].Amount:
				add(a.ID, "exactly-once", "entry %d (%s %d) does not match its operation (%s %d on account %d)", entries[0].ID, entries[0].Kind, entries[0].Amount, o.Kind, o.Amount, o.Account)
			case o.Outcome == outcomeFail:
				add(a.ID, "exactly-once", "operation %d failed (%s) but is in the ledger as entry %d", o.Index, o.Code, entries[0].ID)
			}
		}
	}
	// Exactly once, from the operations' side.
	inLedger := map[string]bool{}
	for _, a := range finals {
		for _, e := range a.Entries {
			inLedger[e.Key] = true
		}
	}
	for _, o := range ops {
		if (o.Kind == "deposit" || o.Kind == "withdrawal") && o.Outcome == outcomeOK && !inLedger[o.Key] {
			add(o.Account, "exactly-once", "operation %d (%s %d, key %q) was acknowledged but is not in the ledger", o.Index, o.Kind, o.Amount, o.Key)
		}
	}
	out = append(out, checkReads(ops, finals)...)
	out = append(out, checkLedgerReads(ops, finals)...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

// checkReads bounds every ok read: writes acknowledged before the read was
// invoked must be in it; writes invoked before it completed (ok or info)
// may be; nothing else can be.
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
			out = append(out, violation{r.Account, "reads", fmt.Sprintf("read %d saw a negative balance %d", r.Index, r.Balance)})
		}
		lo, hi := opening[r.Account], opening[r.Account]
		for _, w := range ops {
			if (w.Kind != "deposit" && w.Kind != "withdrawal") || w.Account != r.Account || w.Outcome == outcomeFail {
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
		if r.Balance < lo || r.Balance > hi {
			out = append(out, violation{r.Account, "reads", fmt.Sprintf("read %d saw %d; the writes around it allow only %d to %d", r.Index, r.Balance, lo, hi)})
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
			out = append(out, violation{r.Account, "append-only", fmt.Sprintf("ledger read %d saw %d entries that are not the beginning of the final ledger (%d entries)", r.Index, r.Entries, len(entries))})
		}
	}
	return out
}
