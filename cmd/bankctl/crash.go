package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"
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
}

// runCrash: node-a takes the account's lease and is killed holding it;
// node-b's withdrawal waits until the lease runs out, then proceeds with a
// higher token. Nothing of node-a's lands.
func (f crashFlags) validate() error {
	if f.amount < 1 || f.balance < f.amount {
		return usageError("--balance must cover --amount")
	}
	return nil
}

func runCrash(ctx context.Context, c *cluster, tl *timeline, f crashFlags) error {
	a, b := c.nodes[0], c.nodes[1]
	var res crashResult
	id, err := a.api.createAccount(ctx, "crash", f.balance)
	if err != nil {
		return trouble(err)
	}
	res.Account = id
	resource := "account:" + strconv.FormatInt(id, 10)
	tl.event(a.name, fmt.Sprintf("opens account %d with %d", id, f.balance), 0, "", plain)

	go func() {
		// It will never answer: node-a dies holding the lease.
		_, _ = a.api.withdraw(ctx, id, withdrawal{Amount: f.amount, Strategy: "lease", HoldMS: 30000}, nil)
	}()
	lock, err := waitForHolder(ctx, b.api, resource, a.name)
	if err != nil {
		return trouble(err)
	}
	res.TokenA, res.RemainingMS = lock.int("token"), lock.int("ttl_remaining_ms")
	tl.event(a.name, "takes the lease, withdrawing", res.TokenA, fmt.Sprintf("lease ends in %dms", res.RemainingMS), plain)
	if err := a.kill(ctx); err != nil {
		return trouble(err)
	}
	killed := time.Now()
	how := "SIGKILL"
	if a.docker != "" {
		how = "docker kill " + a.docker
	}
	tl.event(a.name, "KILLED ("+how+"), holding the lease", res.TokenA, "no release", bad)

	tl.event(b.name, fmt.Sprintf("withdraws %d (lease): waits for the lock", f.amount), 0, "", plain)
	rb, err := b.api.withdraw(ctx, id, withdrawal{Amount: f.amount, Strategy: "lease"}, nil)
	waited := time.Since(killed)
	res.WaitedMS = waited.Milliseconds()
	if err != nil || rb.Status != http.StatusCreated {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("node-b never got the lock: %v %d %v", err, rb.Status, rb.Body)}
	}
	res.TokenB = rb.int("fence_token")
	tl.event(b.name, fmt.Sprintf("gets the lease after %s, withdraws", waited.Round(10*time.Millisecond)), res.TokenB,
		fmt.Sprintf("201, balance %d", rb.int("balance")), good)
	if res.RemainingMS > 0 {
		res.WaitRatio = float64(res.WaitedMS) / float64(res.RemainingMS)
	}
	if err := a.restart(ctx); err == nil && a.docker != "" {
		tl.event(a.name, "docker start "+a.docker, 0, "back", plain)
	}

	st, err := b.api.account(ctx, id)
	if err != nil {
		return trouble(err)
	}
	res.Balance, res.LedgerWrites = st.Balance, len(st.Entries)
	ok := res.TokenB > res.TokenA && st.consistent() && st.Withdrawn == f.amount && len(st.Entries) == 1
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
