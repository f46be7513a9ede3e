package history

import (
	"fmt"
	"hash/fnv"
	"sort"
)

// Violation is a rule of Check broken by a history, on one account.
type Violation struct {
	Account int64  `json:"account"`
	Rule    string `json:"rule"`
	Detail  string `json:"detail"`
}

// The checker's rules, one name each, so that a violation says which broke.
const (
	// Money.
	RuleBalance      = "balance"          // the balance is opening + deposits − withdrawals of the ledger
	RuleEntryBalance = "entry-balance"    // each entry's balance follows from the one before and its amount
	RuleNegative     = "negative-balance" // no entry takes the balance below zero
	// Exactly once, by Idempotency-Key.
	RuleAtMostOnce   = "at-most-once"            // no key has two ledger entries, however many attempts it took
	RuleAcknowledged = "acknowledged-in-ledger"  // a write any attempt of which was answered ok is in the ledger
	RuleRefused      = "refused-not-in-ledger"   // a write every attempt of which was refused is not
	RuleOrphan       = "entry-without-operation" // every entry has a key that some write of the history sent
	RuleMismatch     = "entry-matches-operation" // an entry has its write's account, kind and amount
	// Reads.
	RuleReadNegative = "read-negative"    // no read sees a negative balance
	RuleReadLow      = "read-lower-bound" // a read sees at least what the writes around it allow
	RuleReadHigh     = "read-upper-bound" // and at most that
	// Fences and the ledger's history.
	RuleFence      = "fence"       // fencing tokens never go down in ledger order
	RuleAppendOnly = "append-only" // every ledger read is the beginning of the final ledger
	// Grants (lease_grants, read from the database): per resource, tokens
	// strictly increase in grant order, and no token is granted twice.
	RuleGrantTokens = "grant-tokens"
)

// Check judges a history against the final accounts and returns
// every violation of the rules above.
func Check(ops []Op, finals []Account) []Violation {
	ops = append([]Op(nil), ops...)
	for i := range ops {
		Settle(&ops[i])
	}
	var out []Violation
	add := func(account int64, rule, format string, args ...any) {
		out = append(out, Violation{Account: account, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	writes := map[string]Op{} // by idempotency key
	for _, o := range ops {
		if IsWrite(o) {
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
				add(a.ID, RuleEntryBalance, "entry %d says balance %d after it; the entries up to it make %d", e.ID, e.Balance, running)
			}
			if running < 0 {
				add(a.ID, RuleNegative, "entry %d takes the balance to %d", e.ID, running)
			}
			if e.Token != 0 {
				if e.Token < lastToken {
					add(a.ID, RuleFence, "entry %d was written with token %d after a write with token %d", e.ID, e.Token, lastToken)
				}
				lastToken = max(lastToken, e.Token)
			}
			o, known := writes[e.Key]
			if e.Key == "" || !known {
				add(a.ID, RuleOrphan, "ledger entry %d (key %q) belongs to no operation", e.ID, e.Key)
				continue
			}
			if inLedger[accountKey{a.ID, e.Key}]++; inLedger[accountKey{a.ID, e.Key}] == 2 {
				add(a.ID, RuleAtMostOnce, "key %q has a second ledger entry, %d (%d attempts)", e.Key, e.ID, max(1, len(o.Attempts)))
			}
			if o.Account != a.ID || o.Kind != e.Kind || o.Amount != e.Amount {
				add(a.ID, RuleMismatch, "entry %d (%s %d) does not match its operation (%s %d on account %d)", e.ID, e.Kind, e.Amount, o.Kind, o.Amount, o.Account)
			}
			if o.Outcome == OutcomeFail {
				add(a.ID, RuleRefused, "operation %d was refused (%s) but is in the ledger as entry %d", o.Index, o.Code, e.ID)
			}
		}
		if running != a.Balance {
			add(a.ID, RuleBalance, "balance %d, but opening %d and the ledger make %d", a.Balance, a.Opening, running)
		}
	}
	for _, o := range ops {
		if IsWrite(o) && o.Outcome == OutcomeOK && inLedger[accountKey{o.Account, o.Key}] == 0 {
			add(o.Account, RuleAcknowledged, "operation %d (%s %d, key %q) was acknowledged but is not in the ledger", o.Index, o.Kind, o.Amount, o.Key)
		}
	}
	out = append(out, checkReads(ops, finals)...)
	out = append(out, checkLedgerReads(ops, finals)...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

// checkReads bounds every ok read: writes acknowledged before the read was
// invoked must be in it; writes invoked before it completed, and not
// refused, may be; nothing else can be.
func checkReads(ops []Op, finals []Account) []Violation {
	var out []Violation
	opening := map[int64]int64{}
	for _, a := range finals {
		opening[a.ID] = a.Opening
	}
	for _, r := range ops {
		if r.Kind != "read" || r.Outcome != OutcomeOK {
			continue
		}
		if r.Balance < 0 {
			out = append(out, Violation{r.Account, RuleReadNegative, fmt.Sprintf("read %d saw a negative balance %d", r.Index, r.Balance)})
		}
		lo, hi := opening[r.Account], opening[r.Account]
		for _, w := range ops {
			if !IsWrite(w) || w.Account != r.Account || w.Outcome == OutcomeFail {
				continue
			}
			certain := w.Outcome == OutcomeOK && w.Complete < r.Invoke
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
			out = append(out, Violation{r.Account, RuleReadLow, fmt.Sprintf("read %d saw %d; the writes around it allow %d at least", r.Index, r.Balance, lo)})
		}
		if r.Balance > hi {
			out = append(out, Violation{r.Account, RuleReadHigh, fmt.Sprintf("read %d saw %d; the writes around it allow %d at most", r.Index, r.Balance, hi)})
		}
	}
	return out
}

// Digest summarises a ledger prefix, so that a history can say what a
// ledger read saw without carrying every entry.
func Digest(entries []Entry) string {
	h := fnv.New64a()
	for _, e := range entries {
		fmt.Fprintf(h, "%d|%s|%d|%d|%s|%d;", e.ID, e.Kind, e.Amount, e.Balance, e.Key, e.Token)
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// checkLedgerReads: the ledger is append-only, so what any read saw must be
// exactly the beginning of the final ledger.
func checkLedgerReads(ops []Op, finals []Account) []Violation {
	var out []Violation
	final := map[int64][]Entry{}
	for _, a := range finals {
		final[a.ID] = a.Entries
	}
	for _, r := range ops {
		if r.Kind != "ledger" || r.Outcome != OutcomeOK {
			continue
		}
		entries := final[r.Account]
		if r.Entries > len(entries) || Digest(entries[:r.Entries]) != r.Digest {
			out = append(out, Violation{r.Account, RuleAppendOnly, fmt.Sprintf("ledger read %d saw %d entries that are not the beginning of the final ledger (%d entries)", r.Index, r.Entries, len(entries))})
		}
	}
	return out
}
