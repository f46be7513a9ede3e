package history

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgtest"
)

// TestOutages: a failover's outage runs from the first write that failed
// after it began to the first success of a write invoked after that
// failure; writes before the fault, and successes of writes invoked before
// the failure, do not count.
func TestOutages(t *testing.T) {
	t.Parallel()
	w := func(invoke, complete float64, outcome, code string) Op {
		return Op{Kind: "deposit", Attempts: []Attempt{{Invoke: invoke, Complete: complete, Outcome: outcome, Code: code}}}
	}
	ops := []Op{
		w(0.5, 0.6, OutcomeInfo, "no_answer"),            // before the fault
		w(1.0, 1.1, OutcomeOK, ""),                       // before the failure
		w(1.2, 1.5, OutcomeFail, "database_unavailable"), // the first failure
		w(1.3, 9.0, OutcomeInfo, "outcome_unknown"),
		w(1.1, 4.0, OutcomeOK, ""), // invoked before the failure: waited it out, does not end it
		w(5.0, 5.2, OutcomeOK, ""), // the first success after
		w(6.0, 6.1, OutcomeOK, ""),
		w(2.0, 2.1, OutcomeFail, "insufficient_funds"), // a refusal is no outage
	}
	faults := []Fault{{Kind: "kill", Start: 0}, {Kind: "failover", Node: "node1", Start: 1.0, End: 8}}
	got := Outages(ops, faults, "failover")
	if len(got) != 1 || got[0].Fault != 1 || got[0].FirstFail != 1.2 || got[0].FirstOK != 5.2 || got[0].Seconds != 5.2-1.2 {
		t.Fatalf("outages: %+v; want one, of fault 1, from 1.2 to 5.2", got)
	}
}

// TestUnknowns: writes with an unknown attempt are counted by how they
// settled — a later ok, or the final ledger's say — and 500s are counted.
func TestUnknowns(t *testing.T) {
	t.Parallel()
	info := Attempt{Outcome: OutcomeInfo, Code: "no_answer"}
	ops := []Op{
		{Kind: "deposit", Key: "a", Attempts: []Attempt{info, {Outcome: OutcomeOK}}},
		{Kind: "deposit", Key: "b", Attempts: []Attempt{info, info}},
		{Kind: "withdrawal", Key: "c", Attempts: []Attempt{info, {Outcome: OutcomeFail, Code: "database_unavailable"}}},
		{Kind: "deposit", Key: "d", Attempts: []Attempt{{Outcome: OutcomeOK}}},
		{Kind: "deposit", Key: "e", Attempts: []Attempt{{Outcome: OutcomeInfo, Code: "internal"}}},
	}
	finals := []Account{{ID: 1, Entries: []Entry{{Key: "a"}, {Key: "b"}, {Key: "d"}}}}
	got := Unknowns(ops, finals)
	want := map[string]int{"ok": 1, "applied": 1, "not-applied": 2, "internal": 1}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("unknowns: %v; want %v", got, want)
		}
	}
}

// TestCheckGrants: lease_grants with tokens increasing per resource pass; a
// token granted below the one before on its resource is reported.
func TestCheckGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	insert := func(token int64, resource string, at string) {
		t.Helper()
		if _, err := conn.Exec(ctx, `INSERT INTO lease_grants (token, resource, holder, granted_at) VALUES ($1, $2, 'h', $3::timestamptz)`, token, resource, at); err != nil {
			t.Fatal(err)
		}
	}
	insert(1, "a", "2026-01-01 00:00:01Z")
	insert(2, "b", "2026-01-01 00:00:02Z")
	insert(3, "a", "2026-01-01 00:00:03Z")
	grants, bad, err := CheckGrants(ctx, url)
	if err != nil || grants != 3 || len(bad) != 0 {
		t.Fatalf("increasing tokens: %d grants, %v, %v; want 3 and no violation", grants, bad, err)
	}
	insert(0, "a", "2026-01-01 00:00:04Z") // after a failover, a token that went back
	if _, bad, err = CheckGrants(ctx, url); err != nil || len(bad) != 1 || bad[0].Rule != RuleGrantTokens {
		t.Fatalf("a token that went back: %v, %v; want one %s violation", bad, err, RuleGrantTokens)
	}
}
