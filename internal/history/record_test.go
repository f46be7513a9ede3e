package history

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/bankdtest"
	"github.com/lockbank/lockbank/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// nodes serves bankd and returns it as a node, with a node whose server is
// gone (every request to it gets no answer), and an account of 1000.
func nodes(t *testing.T) (live, gone Node, account int64) {
	t.Helper()
	srv := bankdtest.Start(t, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	live, gone = Node{Name: "node-live", API: client.New(srv.URL)}, Node{Name: "node-gone", API: client.New(dead.URL)}
	a, err := live.API.CreateAccount(context.Background(), "history", 1000)
	if err != nil {
		t.Fatal(err)
	}
	return live, gone, a.ID
}

// TestPerform: a write with no answer is retried with its key on the next
// node and settles as acknowledged; a refusal is not retried; a read and a
// ledger read record what they saw.
func TestPerform(t *testing.T) {
	t.Parallel()
	live, gone, id := nodes(t)
	ctx := context.Background()
	r := NewRecorder(ctx)
	both := []Node{gone, live}

	w := Op{Kind: "withdrawal", Account: id, Amount: 100, Strategy: "lease", Key: "k1", Node: gone.Name}
	r.Perform(ctx, &w, both, 5*time.Second)
	if len(w.Attempts) != 2 || w.Attempts[0].Node != gone.Name || w.Attempts[0].Outcome != OutcomeInfo || w.Attempts[0].Code != "no_answer" ||
		w.Attempts[1].Node != live.Name || w.Attempts[1].Outcome != OutcomeOK || w.Outcome != OutcomeOK || w.Balance != 900 || w.Token <= 0 {
		t.Fatalf("write via a node that is gone: %+v; want no_answer, then ok on the next node", w)
	}
	again := Op{Kind: "withdrawal", Account: id, Amount: 100, Strategy: "lease", Key: "k1", Node: live.Name}
	r.Perform(ctx, &again, both, 5*time.Second)
	if len(again.Attempts) != 1 || !again.Attempts[0].Replayed || again.Outcome != OutcomeOK || again.Balance != 900 {
		t.Fatalf("the same key again: %+v; want its stored outcome, replayed", again)
	}

	refused := Op{Kind: "withdrawal", Account: id, Amount: 5000, Strategy: "row", Key: "k2", Node: live.Name}
	r.Perform(ctx, &refused, both, 5*time.Second)
	if len(refused.Attempts) != 1 || refused.Outcome != OutcomeFail || refused.Code != "insufficient_funds" {
		t.Fatalf("a refused write: %+v; want one attempt, fail insufficient_funds", refused)
	}

	read := Op{Kind: "read", Account: id, Node: live.Name}
	r.Perform(ctx, &read, both, 5*time.Second)
	ledger := Op{Kind: "ledger", Account: id, Node: live.Name}
	r.Perform(ctx, &ledger, both, 5*time.Second)
	final, err := ReadAccount(ctx, live.API, id)
	if err != nil {
		t.Fatal(err)
	}
	if read.Outcome != OutcomeOK || read.Balance != 900 || ledger.Outcome != OutcomeOK || ledger.Entries != 1 || ledger.Digest != Digest(final.Entries) {
		t.Fatalf("read %+v, ledger read %+v; want balance 900 and the one entry", read, ledger)
	}
	if final.Balance != 900 || final.Withdrawn() != 100 || final.Deposited() != 0 || !final.Consistent() || final.Entries[0].Key != "k1" {
		t.Fatalf("final %+v", final)
	}
	for _, o := range []Op{w, refused, read, ledger} { // again is w once more: one key, one operation
		r.Record(o)
	}
	if v := Check(r.Ops(), []Account{final}); len(v) != 0 {
		t.Fatalf("the history is not valid: %+v", v)
	}
}

// TestWorkloadRun: a short run records a valid history, and injects its
// faults in turn, each with its window.
func TestWorkloadRun(t *testing.T) {
	t.Parallel()
	live, _, id := nodes(t)
	ctx := context.Background()
	var kinds []string
	w := Workload{Clients: 4, Duration: 2 * time.Second, Timeout: 5 * time.Second, Accounts: []int64{id},
		Nodes: []Node{live}, Strategies: []string{"row", "lease"},
		Faults: []string{"pause", "kill"}, FaultEvery: 300 * time.Millisecond,
		Inject: func(ctx context.Context, r *Recorder, ft *Fault, i int) error {
			kinds = append(kinds, ft.Kind)
			ft.Node = live.Name
			time.Sleep(10 * time.Millisecond) // the fault's window
			return nil
		}}
	r, faults := w.Run(ctx)
	ops := r.Ops()
	s, err := Judge(ctx, live.API, []int64{id}, ops, faults)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Valid || s.ViolationCount != 0 || len(ops) < 20 || s.Operations != len(ops) || s.Faults["pause"] < 1 || s.Outcomes[OutcomeOK] == 0 {
		t.Fatalf("%d operations, summary %+v; want a valid history of at least 20", len(ops), s)
	}
	if len(faults) < 2 || len(faults) != len(kinds) || faults[0].Kind != "pause" || faults[1].Kind != "kill" || faults[0].End-faults[0].Start < 0.01 {
		t.Fatalf("faults %+v (injected %v); want pause, kill, … each lasting its window", faults, kinds)
	}
}

// TestSummarize counts every attempt, not only the settled outcome.
func TestSummarize(t *testing.T) {
	t.Parallel()
	ops := []Op{
		{Kind: "withdrawal", Outcome: OutcomeOK, Attempts: []Attempt{
			{Outcome: OutcomeFail, Code: "stale_fencing_token"},
			{Outcome: OutcomeInfo, Code: "no_answer"},
			{Outcome: OutcomeOK, Replayed: true},
		}},
		{Kind: "deposit", Outcome: OutcomeFail, Code: "lease_expired", Attempts: []Attempt{{Outcome: OutcomeFail, Code: "lease_expired"}}},
		{Kind: "read", Outcome: OutcomeInfo, Code: "no_answer"},
	}
	faults := []Fault{
		{Kind: "pause", LateWrite: "stale_fencing_token"},
		{Kind: "pause", LateWrite: "201"},
		{Kind: "kill", Error: "no such process"},
	}
	s := Summarize(ops, faults)
	if s.Operations != 3 || s.Outcomes[OutcomeOK] != 1 || s.Outcomes[OutcomeFail] != 1 || s.Outcomes[OutcomeInfo] != 1 ||
		s.Attempts != 4 || s.Retried != 1 || s.Replays != 1 || s.FenceRejected != 2 ||
		s.Codes["no_answer"] != 2 || s.Codes["stale_fencing_token"] != 1 || s.Codes["lease_expired"] != 1 ||
		s.Faults["pause"] != 2 || s.Faults["kill"] != 0 || s.PauseProbes != 2 || s.ProbesFenced != 1 {
		t.Fatalf("summary %+v", s)
	}
}

// TestJudge reports a broken history as invalid, with the count of its
// violations and the first ten of them.
func TestJudge(t *testing.T) {
	t.Parallel()
	live, _, id := nodes(t)
	var ops []Op
	for i := range 12 { // acknowledged deposits that never reached the ledger
		ops = append(ops, Op{Index: i, Kind: "deposit", Account: id, Amount: 1, Key: fmt.Sprint("lost", i), Outcome: OutcomeOK})
	}
	s, err := Judge(context.Background(), live.API, []int64{id}, ops, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Valid || s.ViolationCount != 12 || len(s.Violations) != 10 || s.Violations[0].Rule != RuleAcknowledged {
		t.Fatalf("summary %+v; want 12 acknowledged-in-ledger violations, 10 shown", s)
	}
	if _, err := Judge(context.Background(), live.API, []int64{id + 1000}, ops, nil); client.ErrorCode(err) != "account_not_found" {
		t.Fatalf("judging a missing account: %v", err)
	}
}
