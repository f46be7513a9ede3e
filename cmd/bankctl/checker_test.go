package main

import (
	"strings"
	"testing"
)

// A small valid history: two deposits and a withdrawal on account 1, one
// refused withdrawal, one unknown-outcome deposit that did land, a read.
func validHistory() ([]op, []finalAccount) {
	ops := []op{
		{Index: 0, Kind: "deposit", Account: 1, Amount: 50, Key: "k0", Invoke: 0, Complete: 1, Outcome: outcomeOK},
		{Index: 1, Kind: "withdrawal", Account: 1, Amount: 30, Key: "k1", Invoke: 1, Complete: 2, Outcome: outcomeOK, Token: 7},
		{Index: 2, Kind: "withdrawal", Account: 1, Amount: 999, Key: "k2", Invoke: 2, Complete: 3, Outcome: outcomeFail, Code: "insufficient_funds"},
		{Index: 3, Kind: "deposit", Account: 1, Amount: 5, Key: "k3", Invoke: 3, Complete: 9, Outcome: outcomeInfo},
		{Index: 4, Kind: "read", Account: 1, Invoke: 4, Complete: 5, Outcome: outcomeOK, Balance: 120},
	}
	ops = append(ops, op{Index: 5, Kind: "ledger", Account: 1, Invoke: 5, Complete: 6, Outcome: outcomeOK, Entries: 2})
	finals := []finalAccount{{ID: 1, Opening: 100, Balance: 125, Entries: []ledgerEntry{
		{ID: 1, Kind: "deposit", Amount: 50, Balance: 150, Key: "k0"},
		{ID: 2, Kind: "withdrawal", Amount: 30, Balance: 120, Key: "k1", Token: 7},
		{ID: 3, Kind: "deposit", Amount: 5, Balance: 125, Key: "k3"},
	}}}
	ops[5].Digest = ledgerDigest(finals[0].Entries[:2]) // a ledger read that saw the first two entries
	return ops, finals
}

func TestCheckerAcceptsAValidHistory(t *testing.T) {
	ops, finals := validHistory()
	if v := checkHistory(ops, finals); len(v) != 0 {
		t.Fatalf("violations in a valid history: %+v", v)
	}
}

// TestCheckerCatchesPlantedViolations: each planted fault must be reported
// under its rule.
func TestCheckerCatchesPlantedViolations(t *testing.T) {
	tests := []struct {
		name  string
		plant func(ops []op, f []finalAccount) ([]op, []finalAccount)
		rule  string
	}{
		{"LostOkWrite", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			f[0].Entries = f[0].Entries[1:] // the acknowledged deposit k0 vanished…
			f[0].Entries[0].Balance, f[0].Entries[1].Balance = 70, 75
			f[0].Balance = 75 // …consistently, so only exactly-once can catch it
			return ops, f
		}, "exactly-once"},
		{"Duplicate", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			f[0].Entries = append(f[0].Entries, ledgerEntry{ID: 4, Kind: "deposit", Amount: 5, Balance: 130, Key: "k3"})
			f[0].Balance = 130
			return ops, f
		}, "exactly-once"},
		{"FailedWriteApplied", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			ops[2].Amount = 20
			f[0].Entries = append(f[0].Entries, ledgerEntry{ID: 4, Kind: "withdrawal", Amount: 20, Balance: 105, Key: "k2"})
			f[0].Balance = 105
			return ops, f
		}, "exactly-once"},
		{"EntryWithoutOperation", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			f[0].Entries = append(f[0].Entries, ledgerEntry{ID: 4, Kind: "deposit", Amount: 1, Balance: 126, Key: "nobody"})
			f[0].Balance = 126
			return ops, f
		}, "exactly-once"},
		{"Overdraft", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			ops = append(ops, op{Index: 5, Kind: "withdrawal", Account: 1, Amount: 200, Key: "k5", Invoke: 10, Complete: 11, Outcome: outcomeOK})
			f[0].Entries = append(f[0].Entries, ledgerEntry{ID: 4, Kind: "withdrawal", Amount: 200, Balance: -75, Key: "k5"})
			f[0].Balance = -75
			return ops, f
		}, "money"},
		{"LostUpdate", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			f[0].Balance = 155 // the balance forgot the withdrawal the ledger holds
			return ops, f
		}, "money"},
		{"StaleTokenAccepted", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			ops = append(ops, op{Index: 5, Kind: "withdrawal", Account: 1, Amount: 5, Key: "k5", Invoke: 10, Complete: 11, Outcome: outcomeOK, Token: 6})
			f[0].Entries = append(f[0].Entries, ledgerEntry{ID: 4, Kind: "withdrawal", Amount: 5, Balance: 120, Key: "k5", Token: 6})
			f[0].Balance = 120
			return ops, f
		}, "fence"},
		{"ReadOutOfBounds", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			ops[4].Balance = 150 // k1's withdrawal was acknowledged before this read began
			return ops, f
		}, "reads"},
		{"LedgerRewritten", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			seen := []ledgerEntry{{ID: 1, Kind: "deposit", Amount: 50, Balance: 150, Key: "k0"}}
			ops = append(ops, op{Index: 5, Kind: "ledger", Account: 1, Invoke: 2, Complete: 2.5, Outcome: outcomeOK, Entries: 1, Digest: ledgerDigest(seen)})
			f[0].Entries[0].Amount = 49 // the entry a reader saw was later changed
			return ops, f
		}, "append-only"},
		{"NegativeRead", func(ops []op, f []finalAccount) ([]op, []finalAccount) {
			ops[4].Balance = -1
			return ops, f
		}, "reads"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, finals := tt.plant(validHistory())
			var rules []string
			for _, v := range checkHistory(ops, finals) {
				rules = append(rules, v.Rule)
			}
			if !strings.Contains(strings.Join(rules, ","), tt.rule) {
				t.Fatalf("planted %s: violations %v, want one under %q", tt.name, rules, tt.rule)
			}
		})
	}
}
