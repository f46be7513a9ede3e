package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
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
// checker's fence rule reports it. The other clients' requests on n are
// frozen too, as in any pause.
func pauseInLease(ctx context.Context, c *cluster, w *workload, n *node, probeAccount int64, ft *fault, i int) error {
	others := slices.DeleteFunc(slices.Clone(c.nodes), func(o *node) bool { return o == n })
	if len(others) == 0 {
		return fmt.Errorf("the pause probe needs a second node")
	}
	witness := others[0]
	resource := "account:" + strconv.FormatInt(probeAccount, 10)
	key := fmt.Sprintf("pause%d", i)
	late := op{Client: probeClient, Kind: "withdrawal", Account: probeAccount, Amount: probeAmount, Strategy: "lease",
		Hold: probeHold.Milliseconds(), Key: key + "-late", Node: n.name}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		// One attempt: its answer is what the probe tests. Long enough to
		// outlast the freeze and the hold.
		late.Attempts = []attempt{w.attempt(ctx, n, &late, 30*time.Second)}
		settle(&late)
	}()
	// Whatever happens, the late write goes into the history once answered
	// (after the node is resumed, below): if it landed, the checker must
	// know whose entry that is.
	defer func() {
		<-answered
		w.record(late)
		ft.LateWrite = late.Code
		if late.Outcome == outcomeOK {
			ft.LateWrite = "201"
		}
	}()

	frozen := false
	defer func() {
		if frozen {
			_ = n.resume(ctx) // whatever went wrong, leave no node frozen
		}
	}()
	tokenA, err := waitHolding(ctx, witness.api, resource, n.name, answered)
	if err != nil {
		return err
	}
	if err := n.freeze(ctx); err != nil {
		return err
	}
	frozen = true
	frozenAt := time.Now()
	ft.TokenFrozen = tokenA
	leaseCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = waitLeaseOver(leaseCtx, witness.api, resource)
	cancel()
	if err != nil {
		return fmt.Errorf("the frozen %s's lease: %w", n.name, err)
	}

	take := op{Client: probeClient, Kind: "withdrawal", Account: probeAccount, Amount: probeAmount, Strategy: "lease", Key: key + "-take", Node: witness.name}
	w.perform(ctx, &take, others, 5*time.Second)
	w.record(take)
	ft.TokenNewer = take.Token
	back := op{Client: probeClient, Kind: "deposit", Account: probeAccount, Amount: probeAmount, Strategy: "row", Key: key + "-back", Node: witness.name}
	w.perform(ctx, &back, others, 5*time.Second)
	w.record(back)

	time.Sleep(time.Until(frozenAt.Add(probeFreeze)))
	if err := n.resume(ctx); err != nil {
		return err
	}
	frozen = false
	return nil
}

// waitHolding polls the lock API until holder holds resource, and returns
// its token; it gives up if the holder's request was answered first (then it
// never was inside its lease when a freeze could come) or after 30 s.
func waitHolding(ctx context.Context, api *client, resource, holder string, answered <-chan struct{}) (int64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := api.lockStatus(ctx, resource)
		if err == nil && r.Status == http.StatusOK && r.str("holder") == holder && r.Body["held"] == true {
			return r.int("token"), nil
		}
		select {
		case <-answered:
			return 0, fmt.Errorf("%s's lease withdrawal was answered before it was seen holding the lease", holder)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s never held %s (last answer %d %v, %v)", holder, resource, r.Status, r.Body, err)
		}
	}
}
