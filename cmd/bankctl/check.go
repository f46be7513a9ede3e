package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

type checkFlags struct {
	clients  int
	duration time.Duration
	accounts int
	faults   string
	every    time.Duration
	timeout  time.Duration
	history  string
	plot     string
	strategy string
}

func (f *checkFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.clients, "clients", 16, "concurrent clients")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long the workload runs")
	fs.IntVar(&f.accounts, "accounts", 8, "accounts the clients contend on")
	fs.StringVar(&f.faults, "faults", "pause,kill,terminate,db-restart", "faults to inject, comma-separated: pause (SIGSTOP past the lease TTL), kill (SIGKILL, then restart), terminate (pg_terminate_backend of bankd's sessions), db-restart (PostgreSQL immediate shutdown and restart); empty for none")
	fs.DurationVar(&f.every, "fault-every", 3*time.Second, "pause between faults")
	fs.DurationVar(&f.timeout, "timeout", time.Second, "client timeout of half the clients, shorter than the pauses so that unknown outcomes really happen; the other half wait 5 times as long")
	fs.StringVar(&f.strategy, "strategies", "row,lease", "withdrawal strategies to draw from; with unsafe or lease-nofence the check should find violations")
	fs.StringVar(&f.plot, "plot", "", "draw throughput and p99 latency over time, fault windows shaded, as an SVG to this file")
	fs.StringVar(&f.history, "history", "", "write the history (operations and faults) as JSON Lines to this file")
}

func (f checkFlags) validate() error {
	switch {
	case f.clients < 1 || f.clients > 256:
		return usageError("--clients must be from 1 to 256")
	case f.accounts < 1 || f.accounts > 1000:
		return usageError("--accounts must be from 1 to 1000")
	case f.duration < time.Second || f.duration > time.Hour:
		return usageError("--duration must be from 1s to 1h")
	case f.timeout < 100*time.Millisecond:
		return usageError("--timeout must be at least 100ms")
	}
	if len(splitList(f.strategy)) == 0 {
		return usageError("--strategies needs at least one strategy")
	}
	for _, s := range splitList(f.strategy) {
		if s != "row" && s != "lease" && s != "unsafe" && s != "lease-nofence" {
			return usageError("--strategies: %q is not one of row, lease, unsafe, lease-nofence", s)
		}
	}
	for _, fault := range splitList(f.faults) {
		if fault != "pause" && fault != "kill" && fault != "terminate" && fault != "db-restart" {
			return usageError("--faults: %q is not one of pause, kill, terminate, db-restart", fault)
		}
	}
	return nil
}

type fault struct {
	Kind  string  `json:"fault"`
	Node  string  `json:"node,omitempty"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
}

type checkResult struct {
	Valid          bool           `json:"valid"`
	Operations     int            `json:"operations"`
	Outcomes       map[string]int `json:"outcomes"`
	Codes          map[string]int `json:"codes"`
	Faults         map[string]int `json:"faults"`
	FenceRejected  int            `json:"fence_rejections"`
	Violations     []violation    `json:"violations"`
	ViolationCount int            `json:"violation_count"`
}

// runCheck is a Jepsen-style bank test: clients run random deposits,
// withdrawals (row and lease, some holding inside the critical section) and
// reads with idempotency keys while faults are injected; every operation is
// recorded, and the history is checked against the final ledgers.
func runCheck(ctx context.Context, c *cluster, tl *timeline, f checkFlags) error {
	faults := splitList(f.faults)
	if len(faults) > 0 && !c.own && c.nodes[0].docker == "" {
		return usageError("faults need the own cluster (or --docker for pause and kill on node-a); use --faults '' against plain --targets")
	}
	start := time.Now()
	since := func() float64 { return time.Since(start).Seconds() }
	strategies := splitList(f.strategy)
	var ids []int64
	const opening = 100_000
	for i := range f.accounts {
		id, err := c.nodes[0].api.createAccount(ctx, fmt.Sprintf("check-%d", i), opening)
		if err != nil {
			return trouble(err)
		}
		ids = append(ids, id)
	}
	tl.note("check: %d clients for %s over %d accounts on %d nodes; faults: %s every %s; client timeout %s",
		f.clients, f.duration, f.accounts, len(c.nodes), strings.Join(faults, ", "), f.every, f.timeout)

	var (
		mu    sync.Mutex
		ops   []op
		fs    []fault
		wg    sync.WaitGroup
		runCx context.Context
	)
	runCx, stop := context.WithTimeout(ctx, f.duration)
	defer stop()
	for client := range f.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(client), uint64(start.UnixNano())))
			for seq := 0; runCx.Err() == nil; seq++ {
				o := randomOp(rng, client, seq, ids, c.nodes, strategies)
				o.Invoke = since()
				// Half the clients give up before a paused node resumes (unknown
				// outcomes); the other half wait long enough to hear the fence.
				timeout := f.timeout
				if client%2 == 1 {
					timeout *= 5
				}
				issue(ctx, c.nodes, &o, timeout)
				o.Complete = since()
				mu.Lock()
				o.Index = len(ops)
				ops = append(ops, o)
				n := len(ops)
				mu.Unlock()
				if n%100 == 0 {
					tl.showProgress("operations", n, 0)
				}
			}
		})
	}
	if len(faults) > 0 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-runCx.Done():
					return
				case <-time.After(f.every):
				}
				if runCx.Err() != nil {
					return
				}
				ft := fault{Kind: faults[i%len(faults)], Start: since()}
				err := inject(ctx, c, &ft, i)
				ft.End = since()
				if err != nil {
					tl.note("fault %s failed: %v", ft.Kind, err)
					continue
				}
				tl.event(ft.Node, "fault: "+ft.Kind, 0, fmt.Sprintf("%.1fs–%.1fs", ft.Start, ft.End), bad)
				mu.Lock()
				fs = append(fs, ft)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Every fault is healed (inject resumes and restarts before it returns);
	// wait out leases and row locks left by faults, then read the truth.
	for _, n := range c.nodes {
		if err := n.api.waitReady(ctx, 30*time.Second); err != nil {
			return trouble(fmt.Errorf("%s after the run: %w", n.name, err))
		}
	}
	var finals []finalAccount
	for _, id := range ids {
		st, err := c.nodes[0].api.account(ctx, id)
		if err != nil {
			return trouble(err)
		}
		finals = append(finals, toFinal(id, st))
	}

	res := checkResult{Operations: len(ops), Outcomes: map[string]int{}, Codes: map[string]int{}, Faults: map[string]int{}}
	for _, o := range ops {
		res.Outcomes[o.Outcome]++
		if o.Code != "" {
			res.Codes[o.Code]++
		}
		if o.Code == "stale_fencing_token" || o.Code == "lease_expired" {
			res.FenceRejected++
		}
	}
	for _, ft := range fs {
		res.Faults[ft.Kind]++
	}
	all := checkHistory(ops, finals)
	res.ViolationCount = len(all)
	res.Violations = all[:min(len(all), 10)]
	res.Valid = len(all) == 0
	if f.history != "" {
		if err := writeHistory(f.history, ops, fs); err != nil {
			return trouble(err)
		}
	}
	if f.plot != "" {
		out, err := os.Create(f.plot)
		if err != nil {
			return trouble(err)
		}
		err = writePlot(out, ops, fs, since())
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return trouble(err)
		}
		tl.note("plot: %s", f.plot)
	}
	printCheck(tl, res, f.history)
	tl.result(res)
	if !res.Valid {
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d violations", len(all))}
	}
	return nil
}

func randomOp(rng *rand.Rand, client, seq int, ids []int64, nodes []*node, strategies []string) op {
	o := op{Client: client, Account: ids[rng.IntN(len(ids))], Node: nodes[rng.IntN(len(nodes))].name,
		Key: fmt.Sprintf("c%d-%d", client, seq)}
	switch r := rng.Float64(); {
	case r < 0.35:
		o.Kind, o.Amount, o.Strategy = "deposit", 1+rng.Int64N(100), "row"
	case r < 0.85:
		o.Kind, o.Amount, o.Strategy = "withdrawal", 1+rng.Int64N(300), strategies[rng.IntN(len(strategies))]
	case r < 0.95:
		o.Kind, o.Key = "read", ""
	default:
		o.Kind, o.Key = "ledger", ""
	}
	return o
}

// issue sends o to its node and records the outcome: ok (applied), fail (a
// refusal: nothing was applied) or info (no answer, or an answer that does
// not say whether anything was applied).
func issue(ctx context.Context, nodes []*node, o *op, timeout time.Duration) {
	var n *node
	for _, c := range nodes {
		if c.name == o.Node {
			n = c
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	path := fmt.Sprintf("/v1/accounts/%d", o.Account)
	var (
		r   reply
		err error
	)
	switch o.Kind {
	case "read":
		r, err = n.api.do(ctx, "GET", path, nil, nil)
	case "ledger":
		r, err = n.api.do(ctx, "GET", path+"/ledger?limit=10000", nil, nil)
		if err == nil && r.Status == http.StatusOK {
			entries := toFinal(o.Account, accountState{Entries: entryMaps(r.Body["entries"])}).Entries
			o.Entries, o.Digest = len(entries), ledgerDigest(entries)
		}
	case "deposit":
		r, err = n.api.do(ctx, "POST", path+"/deposits", map[string]any{"amount": o.Amount}, map[string]string{"Idempotency-Key": o.Key})
	default:
		hold := int64(0)
		if strings.HasPrefix(o.Strategy, "lease") && o.Amount%3 == 0 { // a third of lease withdrawals pause inside their lease,
			hold = 300 // so that faults land in critical sections
		}
		r, err = n.api.withdraw(ctx, o.Account, withdrawal{Amount: o.Amount, Strategy: o.Strategy, HoldMS: hold}, map[string]string{"Idempotency-Key": o.Key})
	}
	switch {
	case err != nil:
		o.Outcome, o.Code = outcomeInfo, "no_answer"
	case r.Status == http.StatusOK || r.Status == http.StatusCreated:
		o.Outcome, o.Balance, o.Token = outcomeOK, r.int("balance"), r.int("fence_token")
	case r.Status >= 400 && r.Status < 500, r.Code == "lock_timeout", r.Code == "database_unavailable":
		// Refusals, and 503s that bankd gives only when nothing was committed.
		o.Outcome, o.Code = outcomeFail, r.Code
	default:
		o.Outcome, o.Code = outcomeInfo, r.Code
	}
}

// inject applies one fault and heals it before returning.
func inject(ctx context.Context, c *cluster, ft *fault, i int) error {
	// Rotate through the nodes out of step with the fault kinds, so that every
	// kind of fault hits every node in turn.
	n := c.nodes[(i+i/len(c.nodes))%len(c.nodes)]
	if !c.own {
		n = c.nodes[0] // only node-a has a --docker name
	}
	ft.Node = n.name
	switch ft.Kind {
	case "pause":
		if err := n.freeze(ctx); err != nil {
			return err
		}
		// Past the lease TTL (2 s in the own cluster) and the row-lock TTL.
		time.Sleep(2500 * time.Millisecond)
		return n.resume(ctx)
	case "kill":
		if err := n.kill(ctx); err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		return n.restart(ctx)
	case "db-restart":
		ft.Node = ""
		if c.pg == nil {
			return fmt.Errorf("db-restart needs the own cluster's database")
		}
		return c.pg.CrashAndRestart(ctx)
	case "terminate":
		ft.Node = ""
		if c.pgURL == "" {
			return fmt.Errorf("terminate needs the own cluster's database")
		}
		conn, err := pgx.Connect(ctx, c.pgURL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'bankd %'`)
		return err
	}
	return fmt.Errorf("unknown fault %q", ft.Kind)
}

func entryMaps(v any) []map[string]any {
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		out = append(out, e.(map[string]any))
	}
	return out
}

func toFinal(id int64, st accountState) finalAccount {
	f := finalAccount{ID: id, Opening: st.Opening, Balance: st.Balance}
	for _, e := range st.Entries {
		le := ledgerEntry{ID: int64(e["id"].(float64)), Kind: e["kind"].(string), Amount: int64(e["amount"].(float64)),
			Balance: int64(e["balance"].(float64))}
		le.Key, _ = e["idempotency_key"].(string)
		if tok, ok := e["fence_token"].(float64); ok {
			le.Token = int64(tok)
		}
		f.Entries = append(f.Entries, le)
	}
	return f
}

func writeHistory(path string, ops []op, faults []fault) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, o := range ops {
		_ = enc.Encode(o)
	}
	for _, ft := range faults {
		_ = enc.Encode(ft)
	}
	return f.Close()
}

func printCheck(tl *timeline, r checkResult, history string) {
	tl.printf("\n%d operations: %d ok, %d fail, %d info (unknown outcome)\n", r.Operations, r.Outcomes[outcomeOK], r.Outcomes[outcomeFail], r.Outcomes[outcomeInfo])
	tl.printf("faults: %v\n", r.Faults)
	tl.printf("refusals and unknowns by code: %v\n", r.Codes)
	if r.FenceRejected == 0 {
		tl.printf("no write was rejected by a fence in this run: the faults did not land inside a lease's critical section\n")
	} else {
		tl.printf("writes rejected by the fence: %d\n", r.FenceRejected)
	}
	if history != "" {
		tl.printf("history: %s\n", history)
	}
	for _, v := range r.Violations {
		tl.printf("VIOLATION account %d [%s]: %s\n", v.Account, v.Rule, v.Detail)
	}
	if r.Valid {
		tl.printf("%s: 0 violations\n", tl.paint("VALID", good))
	} else {
		tl.printf("%s: %d violations\n", tl.paint("INVALID", bad), r.ViolationCount)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
