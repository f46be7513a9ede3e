package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/history"
)

type crashFlags struct {
	balance int64
	amount  int64
}

func (k *crashFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&k.balance, "balance", 5000, "opening balance")
	fs.Int64Var(&k.amount, "amount", 1000, "node-b's withdrawal")
}

type crashResult struct {
	Account      int64   `json:"account"`
	TokenA       int64   `json:"token_a"`
	TokenB       int64   `json:"token_b"`
	RemainingMS  int64   `json:"lease_remaining_at_kill_ms"`
	WaitedMS     int64   `json:"node_b_waited_ms"`
	Balance      int64   `json:"final_balance"`
	LedgerWrites int     `json:"ledger_entries"`
	Verdict      string  `json:"verdict"`
	WaitRatio    float64 `json:"wait_over_remaining"`
	// LearnedTTLMS is node-a's learned lease TTL when it learns one
	// (--lease-ttl auto), else 0.
	LearnedTTLMS int64 `json:"learned_ttl_ms"`
}

// warmups is how many quick lease withdrawals node-a makes before the
// story: enough for a node with --lease-ttl auto to learn its TTL from.
const warmups = 24

func (f crashFlags) validate() error {
	if f.amount < 1 || f.balance < f.amount {
		return usageError("--balance must cover --amount")
	}
	return nil
}

// run: node-a takes the account's lease and is killed holding it; node-b's
// withdrawal waits until the lease runs out, then proceeds with a higher
// token. Nothing of node-a's lands.
func (f crashFlags) run(ctx context.Context, c *cluster.Cluster, tl *timeline) error {
	a, b := c.Nodes[0], c.Nodes[1]
	var res crashResult
	acct, err := a.API.CreateAccount(ctx, "crash", f.balance)
	if err != nil {
		return trouble(err)
	}
	// Quick work first, on an account of its own: with --lease-ttl auto
	// node-a learns a lease TTL fitted to it; with a fixed TTL it changes
	// nothing.
	warm, err := a.API.CreateAccount(ctx, "crash-warmup", warmups)
	if err != nil {
		return trouble(err)
	}
	for range warmups {
		if _, err := a.API.Withdraw(ctx, warm.ID, client.Withdrawal{Amount: 1, Strategy: "lease"}); err != nil {
			return trouble(err)
		}
	}
	id := acct.ID
	res.Account = id
	resource := "account:" + strconv.FormatInt(id, 10)
	tl.event(a.Name, fmt.Sprintf("opens account %d with %d", id, f.balance), 0, "", plain)

	go func() {
		// It will never answer: node-a dies holding the lease.
		_, _ = a.API.Withdraw(ctx, id, client.Withdrawal{Amount: f.amount, Strategy: "lease", Hold: 30 * time.Second})
	}()
	lock, err := b.WaitHolder(ctx, resource, a.Name, 30*time.Second)
	if err != nil {
		return trouble(err)
	}
	res.TokenA, res.RemainingMS = lock.Token, lock.Remaining.Milliseconds()
	tl.event(a.Name, "takes the lease, withdrawing", res.TokenA, fmt.Sprintf("lease ends in %dms", res.RemainingMS), plain)
	if own, err := a.API.Lock(ctx, resource); err == nil && own.LearnedTTL > 0 {
		res.LearnedTTLMS = own.LearnedTTL.Milliseconds()
		tl.event(a.Name, fmt.Sprintf("learned lease TTL %s (from %d quick withdrawals)", own.LearnedTTL, warmups), res.TokenA, "", plain)
	}
	if err := a.Kill(ctx); err != nil {
		return trouble(err)
	}
	killed := time.Now()
	how := "SIGKILL"
	if a.Docker() != "" {
		how = "docker kill " + a.Docker()
	}
	tl.event(a.Name, "KILLED ("+how+"), holding the lease", res.TokenA, "no release", bad)

	tl.event(b.Name, fmt.Sprintf("withdraws %d (lease): waits for the lock", f.amount), 0, "", plain)
	rb, err := b.API.Withdraw(ctx, id, client.Withdrawal{Amount: f.amount, Strategy: "lease"})
	waited := time.Since(killed)
	res.WaitedMS = waited.Milliseconds()
	if err != nil {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("node-b never got the lock: %v", err)}
	}
	res.TokenB = rb.FenceToken
	tl.event(b.Name, fmt.Sprintf("gets the lease after %s, withdraws", waited.Round(10*time.Millisecond)), res.TokenB,
		fmt.Sprintf("201, balance %d", rb.Balance), good)
	if res.RemainingMS > 0 {
		res.WaitRatio = float64(res.WaitedMS) / float64(res.RemainingMS)
	}
	if err := a.Restart(ctx); err == nil && a.Docker() != "" {
		tl.event(a.Name, "docker start "+a.Docker(), 0, "back", plain)
	}

	st, err := history.ReadAccount(ctx, b.API, id)
	if err != nil {
		return trouble(err)
	}
	res.Balance, res.LedgerWrites = st.Balance, len(st.Entries)
	ok := res.TokenB > res.TokenA && st.Consistent() && st.Withdrawn() == f.amount && len(st.Entries) == 1
	res.Verdict = "FREED AFTER TTL"
	if !ok {
		res.Verdict = "UNEXPECTED"
	}
	t := good
	if !ok {
		t = bad
	}
	tl.printf("\nnode-b waited %s; node-a's lease had %s to run when it took it; token %d → %d; balance %d, %d ledger entry: %s\n",
		waited.Round(10*time.Millisecond), (time.Duration(res.RemainingMS) * time.Millisecond).Round(10*time.Millisecond),
		res.TokenA, res.TokenB, st.Balance, len(st.Entries), tl.paint(res.Verdict, t))
	tl.result(res)
	if !ok {
		return &exitError{code: exitUnsafe, msg: "the crash scenario did not end as it must"}
	}
	return nil
}
