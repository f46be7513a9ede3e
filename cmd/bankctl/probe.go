package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/history"
)

// probeClient is the client number of the pause probe's operations in a
// check's history.
const probeClient = -1

// Timing of the pause probe.
const (
	probeHold   = time.Second             // the late writer's pause between reading and writing, shorter than the 2 s lease
	probeFreeze = 2500 * time.Millisecond // at least: past the lease TTL and the row-lock TTL of the own cluster (2 s)
	probeAmount = 10
)

// pauseInLease is check's pause fault. A node frozen at a random moment is
// rarely inside a lease, and then the fence is never asked; so the pause
// freezes node n inside a lease withdrawal's critical section, on an account
// of its own (probeAccount), and makes the late write one that only the fence
// can refuse:
//
//  1. n starts a lease withdrawal with a hold: it takes the lease (token A),
//     reads the balance, and pauses before writing;
//  2. as soon as the database shows n holding the lease, n is frozen
//     (SIGSTOP), for at least probeFreeze;
//  3. when the database says the lease ran out, another node withdraws with a
//     new lease (token B > A), then deposits the same amount back, so that
//     the balance is again the one n read and the lease strategy's
//     compare-and-set on the balance cannot stand in for the fence;
//  4. n resumes and writes with token A.
//
// With the fence the late write is refused: 409 stale_fencing_token, because
// B was granted (lease_expired only if step 3 failed to take the lease).
// Without it the write lands, with token A after B's entry, and the
// checker's fence rule (internal/history) reports it. The other clients'
// requests on n are frozen too, as in any pause.
func pauseInLease(ctx context.Context, c *cluster.Cluster, r *history.Recorder, n *cluster.Node, probeAccount int64, ft *history.Fault, i int) error {
	others := slices.DeleteFunc(slices.Clone(c.Nodes), func(o *cluster.Node) bool { return o == n })
	if len(others) == 0 {
		return fmt.Errorf("the pause probe needs a second node")
	}
	witness := others[0]
	resource := "account:" + strconv.FormatInt(probeAccount, 10)
	key := fmt.Sprintf("pause%d", i)
	late := history.Op{Client: probeClient, Kind: "withdrawal", Account: probeAccount, Amount: probeAmount, Strategy: "lease",
		Hold: probeHold.Milliseconds(), Key: key + "-late", Node: n.Name}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		// One attempt: its answer is what the probe tests. Long enough to
		// outlast the freeze and the hold.
		late.Attempts = []history.Attempt{r.Attempt(ctx, historyNode(n), &late, 30*time.Second)}
		history.Settle(&late)
	}()
	// Whatever happens, the late write goes into the history once answered
	// (after the node is resumed, below): if it landed, the checker must
	// know whose entry that is.
	defer func() {
		<-answered
		r.Record(late)
		ft.LateWrite = late.Code
		if late.Outcome == history.OutcomeOK {
			ft.LateWrite = "201"
		}
	}()

	frozen := false
	defer func() {
		if frozen {
			_ = n.Resume(ctx) // whatever went wrong, leave no node frozen
		}
	}()
	// Seen holding its lease, by the database, before it could have written:
	// if its request was answered first, it never was inside its lease when
	// a freeze could come.
	holding, stopWaiting := context.WithCancel(ctx)
	go func() {
		select {
		case <-answered:
			stopWaiting()
		case <-holding.Done():
		}
	}()
	lock, err := witness.WaitHolder(holding, resource, n.Name, 30*time.Second)
	stopWaiting()
	if err != nil {
		select {
		case <-answered:
			return fmt.Errorf("%s's lease withdrawal was answered before it was seen holding the lease", n.Name)
		default:
			return err
		}
	}
	if err := n.Freeze(ctx); err != nil {
		return err
	}
	frozen = true
	frozenAt := time.Now()
	ft.TokenFrozen = lock.Token
	if err := witness.WaitLeaseOver(ctx, resource, 30*time.Second); err != nil {
		return fmt.Errorf("the frozen %s's lease: %w", n.Name, err)
	}

	nodes := historyNodes(others)
	take := history.Op{Client: probeClient, Kind: "withdrawal", Account: probeAccount, Amount: probeAmount, Strategy: "lease", Key: key + "-take", Node: witness.Name}
	r.Perform(ctx, &take, nodes, 5*time.Second)
	r.Record(take)
	ft.TokenNewer = take.Token
	back := history.Op{Client: probeClient, Kind: "deposit", Account: probeAccount, Amount: probeAmount, Strategy: "row", Key: key + "-back", Node: witness.Name}
	r.Perform(ctx, &back, nodes, 5*time.Second)
	r.Record(back)

	time.Sleep(time.Until(frozenAt.Add(probeFreeze)))
	if err := n.Resume(ctx); err != nil {
		return err
	}
	frozen = false
	return nil
}

func historyNode(n *cluster.Node) history.Node { return history.Node{Name: n.Name, API: n.API} }

func historyNodes(nodes []*cluster.Node) []history.Node {
	out := make([]history.Node, len(nodes))
	for i, n := range nodes {
		out[i] = historyNode(n)
	}
	return out
}
