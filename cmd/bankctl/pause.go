package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/history"
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

func (f pauseFlags) run(ctx context.Context, c *cluster.Cluster, tl *timeline) error {
	if f.client {
		return pauseClient(ctx, c, tl, f)
	}
	a, b := c.Nodes[0], c.Nodes[1]
	res := pauseResult{Strategy: f.strategy, Mode: "server"}
	acct, err := a.API.CreateAccount(ctx, "pause", f.balance)
	if err != nil {
		return trouble(err)
	}
	id := acct.ID
	res.Account = id
	resource := "account:" + strconv.FormatInt(id, 10)
	tl.event(a.Name, fmt.Sprintf("opens account %d with %d", id, f.balance), 0, "", plain)

	late := make(chan answer, 1)
	go func() {
		late <- withdraw(ctx, a.API, id, client.Withdrawal{Amount: f.amount, Strategy: f.strategy, Hold: f.hold})
	}()
	tl.event(a.Name, fmt.Sprintf("withdraws %d (%s, hold %s)", f.amount, f.strategy, f.hold), 0, "sent", plain)
	if f.strategy == "row" {
		return pauseRow(ctx, a, b, tl, f, &res, late)
	}
	lock, err := b.WaitHolder(ctx, resource, a.Name, 30*time.Second)
	if err != nil {
		return trouble(err)
	}
	res.TokenA = lock.Token
	tl.event(a.Name, "holds the lease, has read the balance", res.TokenA, fmt.Sprintf("lease ends in %dms", lock.Remaining.Milliseconds()), plain)
	time.Sleep(200 * time.Millisecond) // inside node-a's hold: read done, write not yet
	if err := a.Freeze(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.Name, "FROZEN ("+pauseHow(a)+")", 0, "", bad)
	if err := b.WaitLeaseOver(ctx, resource, 11*time.Minute); err != nil { // the longest TTL bankd grants, and some
		_ = a.Resume(ctx)
		return trouble(err)
	}
	tl.event("", "node-a's lease runs out (by the database's clock)", res.TokenA, "", plain)

	rb, err := b.API.Withdraw(ctx, id, client.Withdrawal{Amount: f.amount, Strategy: f.strategy})
	if err != nil {
		_ = a.Resume(ctx)
		return trouble(fmt.Errorf("node-b's withdrawal: %w", err))
	}
	res.TokenB = rb.FenceToken
	tl.event(b.Name, fmt.Sprintf("takes the lease, withdraws %d", f.amount), res.TokenB, fmt.Sprintf("201, balance %d", rb.Balance), good)

	if err := a.Resume(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.Name, "resumes and writes, as if nothing happened", res.TokenA, "", plain)
	ra := <-late
	if ra.status == 201 {
		res.LateA = "201"
		tl.event(a.Name, "late write LANDS", res.TokenA, fmt.Sprintf("201, balance %d", ra.entry.Balance), bad)
	} else {
		res.LateA = ra.code
		tl.event(a.Name, lateRefusal(ra.code), res.TokenA, fmt.Sprintf("%d %s", ra.status, ra.code), refusalTone(ra.code))
	}
	return pauseVerdict(ctx, b, tl, &res, f.amount)
}

// pauseRow freezes node-a inside its row transaction, holding the account's
// row lock. node-b queues for the row until PostgreSQL ends node-a's idle
// session (bankd's --row-lock-ttl); node-a's late write then fails.
func pauseRow(ctx context.Context, a, b *cluster.Node, tl *timeline, f pauseFlags, res *pauseResult, late <-chan answer) error {
	time.Sleep(200 * time.Millisecond) // inside node-a's hold: row locked and read, write not yet
	if err := a.Freeze(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.Name, "FROZEN ("+pauseHow(a)+") holding the row lock", 0, "", bad)
	frozen := time.Now()
	tl.event(b.Name, fmt.Sprintf("withdraws %d (row): queues for the row lock", f.amount), 0, "", plain)
	rb, err := b.API.Withdraw(ctx, res.Account, client.Withdrawal{Amount: f.amount, Strategy: "row"})
	if err != nil {
		_ = a.Resume(ctx)
		return trouble(fmt.Errorf("node-b's withdrawal: %w", err))
	}
	tl.event(b.Name, fmt.Sprintf("gets the row after %s (node-a's session ended), withdraws", time.Since(frozen).Round(10*time.Millisecond)), 0,
		fmt.Sprintf("201, balance %d", rb.Balance), good)
	if err := a.Resume(ctx); err != nil {
		return trouble(err)
	}
	tl.event(a.Name, "resumes and writes, as if nothing happened", 0, "", plain)
	ra := <-late
	if ra.status == 201 {
		res.LateA = "201"
		tl.event(a.Name, "late write LANDS", 0, fmt.Sprintf("201, balance %d", ra.entry.Balance), bad)
	} else {
		res.LateA = ra.code
		tl.event(a.Name, "late write fails: its transaction is gone", 0, fmt.Sprintf("%d %s", ra.status, ra.code), good)
	}
	return pauseVerdict(ctx, b, tl, res, f.amount)
}

// pauseClient is the README's curl story: the nodes are clients of the lock
// API, and their writes carry Fencing-Token.
func pauseClient(ctx context.Context, c *cluster.Cluster, tl *timeline, f pauseFlags) error {
	a, b := c.Nodes[0], c.Nodes[1]
	res := pauseResult{Strategy: "row + Fencing-Token", Mode: "client"}
	acct, err := a.API.CreateAccount(ctx, "pause-client", f.balance)
	if err != nil {
		return trouble(err)
	}
	id := acct.ID
	res.Account = id
	resource := "account:" + strconv.FormatInt(id, 10)
	lockPath := "/v1/locks/" + resource
	const ttl = 2 * time.Second
	la, err := a.API.Acquire(ctx, resource, client.LockRequest{Holder: "node-a", TTL: ttl})
	if err != nil {
		return trouble(fmt.Errorf("node-a's lock: %w", err))
	}
	res.TokenA = la.Token
	tl.event("node-a", fmt.Sprintf("POST %s (ttl %s)", lockPath, ttl), res.TokenA, "201", plain)
	tl.event("node-a", "pauses (GC, swap, a frozen VM) past its lease", 0, "", bad)
	time.Sleep(ttl + 300*time.Millisecond)

	lb, err := b.API.Acquire(ctx, resource, client.LockRequest{Holder: "node-b", TTL: 30 * time.Second})
	if err != nil {
		return trouble(fmt.Errorf("node-b's lock: %w", err))
	}
	res.TokenB = lb.Token
	tl.event("node-b", "POST "+lockPath, res.TokenB, "201", good)
	rb, err := b.API.Withdraw(ctx, id, client.Withdrawal{Amount: f.amount}, client.FencingToken(res.TokenB))
	if err != nil {
		return trouble(fmt.Errorf("node-b's withdrawal: %w", err))
	}
	tl.event("node-b", fmt.Sprintf("withdraws %d with Fencing-Token %d", f.amount, res.TokenB), res.TokenB, fmt.Sprintf("201, balance %d", rb.Balance), good)

	ra := withdraw(ctx, a.API, id, client.Withdrawal{Amount: f.amount}, client.FencingToken(res.TokenA))
	wakes := fmt.Sprintf("wakes, withdraws %d with Fencing-Token %d", f.amount, res.TokenA)
	switch {
	case ra.status == 0:
		return trouble(errors.New(ra.code))
	case ra.status == 201:
		res.LateA = "201"
		tl.event("node-a", wakes, res.TokenA, "201: LANDS", bad)
	default:
		res.LateA = ra.code
		tl.event("node-a", wakes, res.TokenA, fmt.Sprintf("%d %s", ra.status, ra.code), refusalTone(ra.code))
	}
	var rel client.Response
	_ = b.API.Release(ctx, resource, lb.ID, client.CaptureResponse(&rel))
	if rel.StatusCode != 0 {
		tl.event("node-b", "DELETE "+lockPath, res.TokenB, strconv.Itoa(rel.StatusCode), plain)
	}
	return pauseVerdict(ctx, b, tl, &res, f.amount)
}

func pauseVerdict(ctx context.Context, reader *cluster.Node, tl *timeline, res *pauseResult, amount int64) error {
	st, err := history.ReadAccount(ctx, reader.API, res.Account)
	if err != nil {
		return trouble(err)
	}
	res.Balance, res.Withdrawn = st.Balance, st.Withdrawn()
	// Only node-b's withdrawal is in the ledger, and the balance agrees.
	onlyB := st.Consistent() && st.Withdrawn() == amount
	overwritten := res.LateA == "201" && !st.Consistent()
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
		res.Verdict = fmt.Sprintf("UNEXPECTED (late write %s, balance %d, ledger withdrew %d)", res.LateA, st.Balance, st.Withdrawn())
	}
	t := good
	if res.Verdict != verdictFenced && res.Verdict != verdictRowLockEnded {
		t = bad
	}
	tl.printf("\nledger: %d withdrawn of %d; balance %d (the ledger says %d): %s\n",
		st.Withdrawn(), st.Opening, st.Balance, st.Opening+st.Deposited()-st.Withdrawn(), tl.paint(res.Verdict, t))
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

func pauseHow(n *cluster.Node) string {
	if n.Docker() != "" {
		return "docker pause " + n.Docker()
	}
	return "SIGSTOP"
}
