package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

type pauseFlags struct {
	strategy string
	client   bool
	balance  int64
	amount   int64
	hold     time.Duration
}

func (p *pauseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.strategy, "strategy", "lease", "lease (fenced), lease-nofence (the stale overwrite), or row (a frozen row lock, ended by the row-lock TTL)")
	fs.BoolVar(&p.client, "client", false, "play the story with the lock API and Fencing-Token, as the README's curl walkthrough does")
	fs.Int64Var(&p.balance, "balance", 5000, "opening balance")
	fs.Int64Var(&p.amount, "amount", 1000, "each node's withdrawal")
	fs.DurationVar(&p.hold, "hold", time.Second, "node-a's pause between reading and writing (hold_ms); the freeze comes inside it")
}

// Outcomes of the pause story.
const (
	verdictFenced         = "FENCED"          // the late write was refused as stale_fencing_token; the ledger holds node-b's withdrawal only
	verdictStaleOverwrite = "STALE OVERWRITE" // the late write landed on top of node-b's: money lost
	verdictRowLockEnded   = "ROW LOCK ENDED"  // row: the frozen session was ended, its write failed, node-b's stands
)

type pauseResult struct {
	Strategy  string `json:"strategy"`
	Mode      string `json:"mode"`
	Account   int64  `json:"account"`
	TokenA    int64  `json:"token_a"`
	TokenB    int64  `json:"token_b"`
	LateA     string `json:"late_write"` // "201" or the problem code
	Balance   int64  `json:"final_balance"`
	Withdrawn int64  `json:"withdrawn"`
	Verdict   string `json:"verdict"`
}

func (f pauseFlags) validate() error {
	if f.strategy != "lease" && f.strategy != "lease-nofence" && f.strategy != "row" {
		return usageError("--strategy must be lease, lease-nofence or row")
	}
	if f.client && f.strategy != "lease" {
		return usageError("--client plays the fenced story; it takes no --strategy")
	}
	if f.amount < 1 || f.balance < 2*f.amount {
		return usageError("--balance must cover two withdrawals of --amount")
	}
	if f.hold < 300*time.Millisecond || f.hold > 30*time.Second {
		return usageError("--hold must be from 300ms (node-a is frozen 200ms into it) to 30s")
	}
	return nil
}

func runPause(ctx context.Context, c *cluster, tl *timeline, f pauseFlags) error {
	if f.client {
		return pauseClient(ctx, c, tl, f)
	}
	a, b := c.nodes[0], c.nodes[1]
	res := pauseResult{Strategy: f.strategy, Mode: "server"}
	id, err := a.api.createAccount(ctx, "pause", f.balance)
	if err != nil {
		return trouble(err)
	}
	res.Account = id
	resource := "account:" + strconv.FormatInt(id, 10)
	tl.event(a.name, fmt.Sprintf("opens account %d with %d", id, f.balance), 0, "", plain)

	late := make(chan reply, 1)
	go func() {
		r, err := a.api.withdraw(ctx, id, withdrawal{Amount: f.amount, Strategy: f.strategy, HoldMS: f.hold.Milliseconds()}, nil)
		if err != nil {
			r = reply{Code: "transport_error: " + err.Error()}
		}
		late <- r
	}()
	tl.event(a.name, fmt.Sprintf("withdraws %d (%s, hold %s)", f.amount, f.strategy, f.hold), 0, "sent", plain)
	if f.strategy == "row" {
		return pauseRow(ctx, a, b, tl, f, &res, late)
	}
	lock, err := waitForHolder(ctx, b.api, resource, a.name)
	if err != nil {
		return trouble(err)
	}
	res.TokenA = lock.int("token")
	tl.event(a.name, "holds the lease, has read the balance", res.TokenA, fmt.Sprintf("lease ends in %dms", lock.int("ttl_remaining_ms")), plain)
	time.Sleep(200 * time.Millisecond) // inside node-a's hold: read done, write not yet
	if err := a.freeze(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.name, "FROZEN ("+pauseHow(a)+")", 0, "", bad)
	if err := waitLeaseOver(ctx, b.api, resource); err != nil {
		_ = a.resume(ctx)
		return trouble(err)
	}
	tl.event("", "node-a's lease runs out (by the database's clock)", res.TokenA, "", plain)

	rb, err := b.api.withdraw(ctx, id, withdrawal{Amount: f.amount, Strategy: f.strategy}, nil)
	if err != nil || rb.Status != http.StatusCreated {
		_ = a.resume(ctx)
		return trouble(fmt.Errorf("node-b's withdrawal: %v %d %v", err, rb.Status, rb.Body))
	}
	res.TokenB = rb.int("fence_token")
	tl.event(b.name, fmt.Sprintf("takes the lease, withdraws %d", f.amount), res.TokenB, fmt.Sprintf("201, balance %d", rb.int("balance")), good)

	if err := a.resume(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.name, "resumes and writes, as if nothing happened", res.TokenA, "", plain)
	ra := <-late
	if ra.Status == http.StatusCreated {
		res.LateA = "201"
		tl.event(a.name, "late write LANDS", res.TokenA, fmt.Sprintf("201, balance %d", ra.int("balance")), bad)
	} else {
		res.LateA = ra.Code
		tl.event(a.name, lateRefusal(ra.Code), res.TokenA, fmt.Sprintf("%d %s", ra.Status, ra.Code), refusalTone(ra.Code))
	}
	return pauseVerdict(ctx, b, tl, &res, f.amount)
}

// pauseRow freezes node-a inside its row transaction, holding the account's
// row lock. node-b queues for the row until PostgreSQL ends node-a's idle
// session (bankd's --row-lock-ttl); node-a's late write then fails.
func pauseRow(ctx context.Context, a, b *node, tl *timeline, f pauseFlags, res *pauseResult, late <-chan reply) error {
	time.Sleep(200 * time.Millisecond) // inside node-a's hold: row locked and read, write not yet
	if err := a.freeze(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.name, "FROZEN ("+pauseHow(a)+") holding the row lock", 0, "", bad)
	frozen := time.Now()
	tl.event(b.name, fmt.Sprintf("withdraws %d (row): queues for the row lock", f.amount), 0, "", plain)
	rb, err := b.api.withdraw(ctx, res.Account, withdrawal{Amount: f.amount, Strategy: "row"}, nil)
	if err != nil || rb.Status != http.StatusCreated {
		_ = a.resume(ctx)
		return trouble(fmt.Errorf("node-b's withdrawal: %v %d %v", err, rb.Status, rb.Body))
	}
	tl.event(b.name, fmt.Sprintf("gets the row after %s (node-a's session ended), withdraws", time.Since(frozen).Round(10*time.Millisecond)), 0,
		fmt.Sprintf("201, balance %d", rb.int("balance")), good)
	if err := a.resume(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.name, "resumes and writes, as if nothing happened", 0, "", plain)
	ra := <-late
	if ra.Status == http.StatusCreated {
		res.LateA = "201"
		tl.event(a.name, "late write LANDS", 0, fmt.Sprintf("201, balance %d", ra.int("balance")), bad)
	} else {
		res.LateA = ra.Code
		tl.event(a.name, "late write fails: its transaction is gone", 0, fmt.Sprintf("%d %s", ra.Status, ra.Code), good)
	}
	return pauseVerdict(ctx, b, tl, res, f.amount)
}

// pauseClient is the README's curl story: the nodes are clients of the lock
// API, and their writes carry Fencing-Token.
func pauseClient(ctx context.Context, c *cluster, tl *timeline, f pauseFlags) error {
	a, b := c.nodes[0], c.nodes[1]
	res := pauseResult{Strategy: "row + Fencing-Token", Mode: "client"}
	id, err := a.api.createAccount(ctx, "pause-client", f.balance)
	if err != nil {
		return trouble(err)
	}
	res.Account = id
	lockPath := "/v1/locks/account:" + strconv.FormatInt(id, 10)
	const ttl = 2 * time.Second
	la, err := a.api.do(ctx, "POST", lockPath, map[string]any{"holder": "node-a", "ttl_ms": ttl.Milliseconds()}, nil)
	if err != nil || la.Status != http.StatusCreated {
		return trouble(fmt.Errorf("node-a's lock: %v %d %v", err, la.Status, la.Body))
	}
	res.TokenA = la.int("token")
	tl.event("node-a", fmt.Sprintf("POST %s (ttl %s)", lockPath, ttl), res.TokenA, "201", plain)
	tl.event("node-a", "pauses (GC, swap, a frozen VM) past its lease", 0, "", bad)
	time.Sleep(ttl + 300*time.Millisecond)

	lb, err := b.api.do(ctx, "POST", lockPath, map[string]any{"holder": "node-b", "ttl_ms": 30000}, nil)
	if err != nil || lb.Status != http.StatusCreated {
		return trouble(fmt.Errorf("node-b's lock: %v %d %v", err, lb.Status, lb.Body))
	}
	res.TokenB = lb.int("token")
	tl.event("node-b", "POST "+lockPath, res.TokenB, "201", good)
	rb, err := b.api.withdraw(ctx, id, withdrawal{Amount: f.amount}, map[string]string{"Fencing-Token": strconv.FormatInt(res.TokenB, 10)})
	if err != nil || rb.Status != http.StatusCreated {
		return trouble(fmt.Errorf("node-b's withdrawal: %v %d %v", err, rb.Status, rb.Body))
	}
	tl.event("node-b", fmt.Sprintf("withdraws %d with Fencing-Token %d", f.amount, res.TokenB), res.TokenB, fmt.Sprintf("201, balance %d", rb.int("balance")), good)

	ra, err := a.api.withdraw(ctx, id, withdrawal{Amount: f.amount}, map[string]string{"Fencing-Token": strconv.FormatInt(res.TokenA, 10)})
	if err != nil {
		return trouble(err)
	}
	if ra.Status == http.StatusCreated {
		res.LateA = "201"
		tl.event("node-a", fmt.Sprintf("wakes, withdraws %d with Fencing-Token %d", f.amount, res.TokenA), res.TokenA, "201: LANDS", bad)
	} else {
		res.LateA = ra.Code
		tl.event("node-a", fmt.Sprintf("wakes, withdraws %d with Fencing-Token %d", f.amount, res.TokenA), res.TokenA, fmt.Sprintf("%d %s", ra.Status, ra.Code), refusalTone(ra.Code))
	}
	rel, err := b.api.do(ctx, "DELETE", lockPath, nil, map[string]string{"Lease-Id": lb.str("lease_id")})
	if err == nil {
		tl.event("node-b", "DELETE "+lockPath, res.TokenB, strconv.Itoa(rel.Status), plain)
	}
	return pauseVerdict(ctx, b, tl, &res, f.amount)
}

func pauseVerdict(ctx context.Context, reader *node, tl *timeline, res *pauseResult, amount int64) error {
	st, err := reader.api.account(ctx, res.Account)
	if err != nil {
		return trouble(err)
	}
	res.Balance, res.Withdrawn = st.Balance, st.Withdrawn
	// Only node-b's withdrawal is in the ledger, and the balance agrees.
	onlyB := st.consistent() && st.Withdrawn == amount
	overwritten := res.LateA == "201" && !st.consistent()
	switch {
	case res.Strategy == "row" && res.LateA != "201" && onlyB:
		res.Verdict = verdictRowLockEnded
	// FENCED means the fence said no, not merely that the money came out
	// right: node-b took a newer lease before node-a wrote, so a working
	// fence refuses node-a's token as stale. Any other refusal (lock_timeout
	// from the balance check, a dropped connection) is not the fence's doing.
	case res.Strategy != "row" && res.LateA == "stale_fencing_token" && onlyB:
		res.Verdict = verdictFenced
	case overwritten:
		res.Verdict = verdictStaleOverwrite
	default:
		res.Verdict = fmt.Sprintf("UNEXPECTED (late write %s, balance %d, ledger withdrew %d)", res.LateA, st.Balance, st.Withdrawn)
	}
	t := good
	if res.Verdict != verdictFenced && res.Verdict != verdictRowLockEnded {
		t = bad
	}
	tl.printf("\nledger: %d withdrawn of %d; balance %d (the ledger says %d): %s\n",
		st.Withdrawn, st.Opening, st.Balance, st.Opening+st.Deposited-st.Withdrawn, tl.paint(res.Verdict, t))
	tl.result(res)
	want := verdictFenced
	switch res.Strategy {
	case "lease-nofence":
		want = verdictStaleOverwrite
	case "row":
		want = verdictRowLockEnded
	}
	if res.Verdict != want {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%s: want %s, got %s", res.Strategy, want, res.Verdict)}
	}
	return nil
}

// lateRefusal names who refused node-a's late write: the fence, or
// something else that happened to stop it.
func lateRefusal(code string) string {
	if code == "stale_fencing_token" {
		return "late write refused by the fence"
	}
	return "late write refused, but not by the fence"
}

func refusalTone(code string) tone {
	if code == "stale_fencing_token" {
		return good
	}
	return bad
}

func pauseHow(n *node) string {
	if n.docker != "" {
		return "docker pause " + n.docker
	}
	return "SIGSTOP"
}

// waitForHolder polls the lock API until holder holds resource's lease.
func waitForHolder(ctx context.Context, api *client, resource, holder string) (reply, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := api.lockStatus(ctx, resource)
		if err == nil && r.Status == http.StatusOK && r.str("holder") == holder && r.Body["held"] == true {
			return r, nil
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s never held %s (last answer %d %v, %v)", holder, resource, r.Status, r.Body, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLeaseOver polls until resource's lease is no longer live.
func waitLeaseOver(ctx context.Context, api *client, resource string) error {
	deadline := time.Now().Add(11 * time.Minute) // the longest TTL bankd grants, and some
	for {
		r, err := api.lockStatus(ctx, resource)
		if err == nil && r.Status == http.StatusOK && r.Body["held"] == false {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the lease on %s never ran out", resource)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func trouble(err error) error { return &exitError{code: exitTrouble, msg: err.Error()} }
