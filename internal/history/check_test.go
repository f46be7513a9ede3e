package history

import (
	"slices"
	"strings"
	"testing"
)

// validHistory is a small valid history on account 1 (opening 100), with
// account 2 (opening 10) untouched. Each line is there to catch a way the
// checker could grow too strict; the planted histories below each break it
// in one place.
//
//	ledger    E1 k0 +50 →150, E2 k1 −30 →120 (token 7), E3 k6 +7 →127,
//	          E4 k3 +5 →132, E5 k4 +10 →142, E6 k5 −20 →122 (token 8)
//	k2        refused (insufficient funds), not in the ledger
//	k3        unknown outcome; it landed, and read 8 saw it
//	k4        first attempt unknown, retried on node-b: acknowledged
//	k5        unknown, then lock_timeout on retry: still unknown, and it landed
//	k6        acknowledged while read 5 ran; read 5 did not see it
func validHistory() ([]Op, []Account) {
	entries := []Entry{
		{ID: 1, Kind: "deposit", Amount: 50, Balance: 150, Key: "k0"},
		{ID: 2, Kind: "withdrawal", Amount: 30, Balance: 120, Key: "k1", Token: 7},
		{ID: 3, Kind: "deposit", Amount: 7, Balance: 127, Key: "k6"},
		{ID: 4, Kind: "deposit", Amount: 5, Balance: 132, Key: "k3"},
		{ID: 5, Kind: "deposit", Amount: 10, Balance: 142, Key: "k4"},
		{ID: 6, Kind: "withdrawal", Amount: 20, Balance: 122, Key: "k5", Token: 8},
	}
	ops := []Op{
		{Index: 0, Kind: "deposit", Account: 1, Amount: 50, Key: "k0", Invoke: 0, Complete: 1, Outcome: OutcomeOK},
		{Index: 1, Kind: "withdrawal", Account: 1, Amount: 30, Key: "k1", Invoke: 1, Complete: 2, Outcome: OutcomeOK, Token: 7},
		{Index: 2, Kind: "withdrawal", Account: 1, Amount: 999, Key: "k2", Invoke: 2, Complete: 3, Outcome: OutcomeFail, Code: "insufficient_funds"},
		{Index: 3, Kind: "ledger", Account: 1, Invoke: 2.5, Complete: 3, Outcome: OutcomeOK, Entries: 2, Digest: Digest(entries[:2])},
		{Index: 4, Kind: "deposit", Account: 1, Amount: 5, Key: "k3", Invoke: 3, Complete: 9, Outcome: OutcomeInfo, Code: "no_answer"},
		// k0 and k1 are certain; k3, k6 and k4 (its first attempt) possible: 120 to 142.
		{Index: 5, Kind: "read", Account: 1, Invoke: 4, Complete: 5, Outcome: OutcomeOK, Balance: 120},
		{Index: 6, Kind: "deposit", Account: 1, Amount: 7, Key: "k6", Invoke: 4.2, Complete: 4.8, Outcome: OutcomeOK},
		{Index: 7, Kind: "deposit", Account: 1, Amount: 10, Key: "k4", Attempts: []Attempt{
			{Node: "node-a", Invoke: 4.5, Complete: 5.5, Outcome: OutcomeInfo, Code: "no_answer"},
			{Node: "node-b", Invoke: 5.6, Complete: 6.5, Outcome: OutcomeOK},
		}},
		// k0, k1 and k6 certain, k3 and k4 possible: 127 to 142; it saw both.
		{Index: 8, Kind: "read", Account: 1, Invoke: 6, Complete: 7, Outcome: OutcomeOK, Balance: 142},
		{Index: 9, Kind: "withdrawal", Account: 1, Amount: 20, Key: "k5", Strategy: "lease", Attempts: []Attempt{
			{Node: "node-a", Invoke: 8, Complete: 9, Outcome: OutcomeInfo, Code: "outcome_unknown"},
			{Node: "node-c", Invoke: 9.2, Complete: 10, Outcome: OutcomeFail, Code: "lock_timeout"},
		}},
		// k0, k1, k6 and k4 certain, k3 and k5 possible: 117 to 142.
		{Index: 10, Kind: "read", Account: 1, Invoke: 11, Complete: 12, Outcome: OutcomeOK, Balance: 122},
	}
	finals := []Account{
		{ID: 1, Opening: 100, Balance: 122, Entries: entries},
		{ID: 2, Opening: 10, Balance: 10},
	}
	return ops, finals
}

func TestCheckerAcceptsAValidHistory(t *testing.T) {
	ops, finals := validHistory()
	if v := Check(ops, finals); len(v) != 0 {
		t.Fatalf("violations in a valid history: %+v", v)
	}
}

// TestCheckerCatchesPlantedViolations: each planted history breaks one rule
// of the checker, and exactly the rules named must be reported — so each
// case fails if its rule is removed or weakened.
func TestCheckerCatchesPlantedViolations(t *testing.T) {
	type history struct {
		ops    []Op
		finals []Account
	}
	// appendEntry adds an entry to account 1's ledger, with the balance it
	// leaves, and makes the account's balance agree.
	appendEntry := func(h *history, e Entry) {
		a := &h.finals[0]
		e.ID = int64(len(a.Entries) + 1)
		if e.Kind == "deposit" {
			e.Balance = a.Balance + e.Amount
		} else {
			e.Balance = a.Balance - e.Amount
		}
		a.Entries, a.Balance = append(a.Entries, e), e.Balance
	}
	// restate recomputes account 1's balances after an entry was changed, so
	// that only the rule under test is broken.
	restate := func(h *history) {
		a := &h.finals[0]
		running := a.Opening
		for i, e := range a.Entries {
			if e.Kind == "deposit" {
				running += e.Amount
			} else {
				running -= e.Amount
			}
			a.Entries[i].Balance = running
		}
		a.Balance = running
	}
	late := func(kind string, amount int64, key string, outcome string) Op {
		return Op{Index: 11, Kind: kind, Account: 1, Amount: amount, Key: key, Invoke: 13, Complete: 14, Outcome: outcome}
	}
	tests := []struct {
		name  string
		plant func(h *history)
		rules []string
	}{
		// Money.
		{"BalanceDisagreesWithLedger", func(h *history) {
			h.finals[0].Balance = 121 // a lost update the ledger did not see
		}, []string{RuleBalance}},
		{"EntryBalanceDoesNotFollow", func(h *history) {
			h.finals[0].Entries[5].Balance = 123 // E6 says 123 after 142 − 20
		}, []string{RuleEntryBalance}},
		{"Overdraft", func(h *history) {
			h.ops = append(h.ops, late("withdrawal", 200, "k9", OutcomeOK))
			appendEntry(h, Entry{Kind: "withdrawal", Amount: 200, Key: "k9"})
		}, []string{RuleNegative}},

		// Exactly once.
		{"AcknowledgedTwice", func(h *history) {
			appendEntry(h, Entry{Kind: "deposit", Amount: 10, Key: "k4"})
		}, []string{RuleAtMostOnce}},
		{"UnknownAppliedTwice", func(h *history) {
			appendEntry(h, Entry{Kind: "withdrawal", Amount: 20, Key: "k5", Token: 9})
		}, []string{RuleAtMostOnce}},
		{"AcknowledgedLost", func(h *history) {
			h.ops = append(h.ops, late("deposit", 1, "k9", OutcomeOK))
		}, []string{RuleAcknowledged}},
		{"AcknowledgedByARetryLost", func(h *history) {
			o := late("deposit", 1, "k9", "")
			o.Attempts = []Attempt{
				{Node: "node-a", Invoke: 13, Complete: 14, Outcome: OutcomeInfo, Code: "no_answer"},
				{Node: "node-b", Invoke: 14, Complete: 15, Outcome: OutcomeOK},
			}
			h.ops = append(h.ops, o)
		}, []string{RuleAcknowledged}},
		{"RefusedApplied", func(h *history) {
			h.ops = append(h.ops, late("withdrawal", 3, "k9", OutcomeFail))
			appendEntry(h, Entry{Kind: "withdrawal", Amount: 3, Key: "k9"})
		}, []string{RuleRefused}},
		{"RefusedOnEveryAttemptApplied", func(h *history) {
			o := late("withdrawal", 3, "k9", "")
			o.Attempts = []Attempt{
				{Node: "node-a", Invoke: 13, Complete: 14, Outcome: OutcomeFail, Code: "database_unavailable"},
				{Node: "node-b", Invoke: 14, Complete: 15, Outcome: OutcomeFail, Code: "lock_timeout"},
			}
			h.ops = append(h.ops, o)
			appendEntry(h, Entry{Kind: "withdrawal", Amount: 3, Key: "k9"})
		}, []string{RuleRefused}},
		{"EntryOfNoOperation", func(h *history) {
			appendEntry(h, Entry{Kind: "deposit", Amount: 1, Key: "nobody"})
		}, []string{RuleOrphan}},
		{"EntryWithoutKey", func(h *history) {
			appendEntry(h, Entry{Kind: "deposit", Amount: 1})
		}, []string{RuleOrphan}},
		{"EntryAmountDiffers", func(h *history) {
			h.finals[0].Entries[3].Amount = 6 // k3 deposited 5
			restate(h)
		}, []string{RuleMismatch}},
		{"EntryKindDiffers", func(h *history) {
			h.finals[0].Entries[3].Kind = "withdrawal" // k3 was a deposit
			restate(h)
		}, []string{RuleMismatch}},
		{"EntryOnAnotherAccount", func(h *history) {
			h.ops = append(h.ops, late("deposit", 3, "k9", OutcomeOK))
			a := &h.finals[1]
			a.Entries, a.Balance = []Entry{{ID: 7, Kind: "deposit", Amount: 3, Balance: 13, Key: "k9"}}, 13
		}, []string{RuleAcknowledged, RuleMismatch}},

		// Reads.
		{"ReadNegative", func(h *history) {
			// An unknown withdrawal of 1000 makes −1 possible by the bounds.
			h.ops = append(h.ops, Op{Index: 11, Kind: "withdrawal", Account: 1, Amount: 1000, Key: "k9", Invoke: 3.5, Complete: 20, Outcome: OutcomeInfo})
			h.ops[5].Balance = -1
		}, []string{RuleReadNegative}},
		{"ReadBelowLowerBound", func(h *history) {
			h.ops[5].Balance = 119
		}, []string{RuleReadLow}},
		{"ReadAboveUpperBound", func(h *history) {
			h.ops[5].Balance = 143
		}, []string{RuleReadHigh}},
		{"ReadMissesWriteAcknowledgedBeforeIt", func(h *history) {
			h.ops[10].Balance = 112 // k4 (+10) was acknowledged at 6.5, read 10 began at 11
		}, []string{RuleReadLow}},
		{"ReadSeesWriteInvokedAfterIt", func(h *history) {
			h.ops[5].Balance = 100 // k5 (−20) was invoked at 8, read 5 ended at 5
		}, []string{RuleReadLow}},
		{"ReadSeesRefusedWrite", func(h *history) {
			h.ops[2].Amount = 20 // k2 was refused
			h.ops[5].Balance = 100
		}, []string{RuleReadLow}},

		// Fences and the ledger's history.
		{"StaleTokenAccepted", func(h *history) {
			h.ops = append(h.ops, late("withdrawal", 5, "k9", OutcomeOK))
			appendEntry(h, Entry{Kind: "withdrawal", Amount: 5, Key: "k9", Token: 6}) // after token 8
		}, []string{RuleFence}},
		{"LedgerReadEntryVanished", func(h *history) {
			seen := append(h.finals[0].Entries[:2:2], Entry{ID: 3, Kind: "deposit", Amount: 8, Balance: 128, Key: "k8"})
			h.ops[3].Entries, h.ops[3].Digest = 3, Digest(seen)
		}, []string{RuleAppendOnly}},
		{"LedgerReadLongerThanLedger", func(h *history) {
			h.ops[3].Entries = 7
		}, []string{RuleAppendOnly}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, finals := validHistory()
			h := history{ops, finals}
			tt.plant(&h)
			var rules []string
			for _, v := range Check(h.ops, h.finals) {
				if !slices.Contains(rules, v.Rule) {
					rules = append(rules, v.Rule)
				}
			}
			slices.Sort(rules)
			if want := slices.Sorted(slices.Values(tt.rules)); !slices.Equal(rules, want) {
				t.Fatalf("planted %s: rules %s reported, want exactly %s", tt.name, strings.Join(rules, ", "), strings.Join(want, ", "))
			}
		})
	}
}
