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
	fs.StringVar(&f.faults, "faults", "pause,kill,terminate,db-restart", "faults to inject, comma-separated: pause (SIGSTOP a node inside a lease withdrawal, past the lease TTL; its late write must be refused by the fence), kill (SIGKILL, then restart), terminate (pg_terminate_backend of bankd's sessions), db-restart (PostgreSQL immediate shutdown and restart); empty for none")
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
	Error string  `json:"error,omitempty"` // the fault could not be injected
	// A pause's probe (pauseInLease): the tokens of the frozen node's lease
	// and of the lease taken while it was frozen, and what its late write got.
	TokenFrozen int64  `json:"token_frozen,omitempty"`
	TokenNewer  int64  `json:"token_newer,omitempty"`
	LateWrite   string `json:"late_write,omitempty"` // "201" or the problem code
}

type checkResult struct {
	Valid          bool           `json:"valid"`
	Operations     int            `json:"operations"`
	Outcomes       map[string]int `json:"outcomes"`
	Codes          map[string]int `json:"codes"` // of every attempt that was not ok
	Faults         map[string]int `json:"faults"`
	FenceRejected  int            `json:"fence_rejections"` // attempts refused stale_fencing_token or lease_expired
	PauseProbes    int            `json:"pause_probes"`     // pause faults that froze a node inside a lease
	ProbesFenced   int            `json:"pause_probes_fenced"`
	Retried        int            `json:"retried_writes"` // writes that took more than one attempt
	Attempts       int            `json:"write_attempts"`
	Replays        int            `json:"replays"` // attempts answered with the stored outcome of an earlier one
	Violations     []violation    `json:"violations"`
	ViolationCount int            `json:"violation_count"`
}

// Retries of a write whose outcome is unknown, or that was refused for want
// of the database or a lock: at most this many attempts in all, each on the
// next node, the same body and Idempotency-Key each time.
const maxAttempts = 4

// workload is the history being recorded: every operation, numbered in the
// order their answers came.
type workload struct {
	nodes []*node
	start time.Time
	runCx context.Context // the run's window: no new operations or retries after it

	mu  sync.Mutex
	ops []op
}

func (w *workload) since() float64 { return time.Since(w.start).Seconds() }

// record adds o to the history and returns how many operations it holds.
func (w *workload) record(o op) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	o.Index = len(w.ops)
	w.ops = append(w.ops, o)
	return len(w.ops)
}

// runCheck is a Jepsen-style bank test: clients run random deposits,
// withdrawals (row and lease, some holding inside the critical section) and
// reads with idempotency keys while faults are injected; writes whose
// outcome is unknown are retried with the same key on another node; every
// operation is recorded, and the history is checked against the final
// ledgers. Every pause fault freezes a node inside a lease (pauseInLease),
// so the run fails if pauses were injected and the fence refused nothing.
func runCheck(ctx context.Context, c *cluster, tl *timeline, f checkFlags) error {
	faults := splitList(f.faults)
	if len(faults) > 0 && !c.own && c.nodes[0].docker == "" {
		return usageError("faults need the own cluster (or --docker for pause and kill on node-a); use --faults '' against plain --targets")
	}
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
	// The pause probe's own account: nobody else writes to it, so what the
	// probe does there is exactly what the fence decides.
	probeAccount, err := c.nodes[0].api.createAccount(ctx, "check-pause-probe", opening)
	if err != nil {
		return trouble(err)
	}
	tl.note("check: %d clients for %s over %d accounts on %d nodes; faults: %s every %s; client timeout %s",
		f.clients, f.duration, f.accounts, len(c.nodes), strings.Join(faults, ", "), f.every, f.timeout)

	runCx, stop := context.WithTimeout(ctx, f.duration)
	defer stop()
	w := &workload{nodes: c.nodes, start: time.Now(), runCx: runCx}
	var (
		mu sync.Mutex
		fs []fault
		wg sync.WaitGroup
	)
	for client := range f.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(client), uint64(w.start.UnixNano())))
			for seq := 0; runCx.Err() == nil; seq++ {
				o := randomOp(rng, client, seq, ids, c.nodes, strategies)
				// Half the clients give up before a paused node resumes (unknown
				// outcomes); the other half wait long enough to hear the fence.
				timeout := f.timeout
				if client%2 == 1 {
					timeout *= 5
				}
				w.perform(ctx, &o, c.nodes, timeout)
				if n := w.record(o); n%100 == 0 {
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
				ft := fault{Kind: faults[i%len(faults)], Start: w.since()}
				err := inject(ctx, c, w, probeAccount, &ft, i)
				ft.End = w.since()
				if err != nil {
					ft.Error = err.Error()
					tl.note("fault %s failed: %v", ft.Kind, err)
				} else {
					result := fmt.Sprintf("%.1fs–%.1fs", ft.Start, ft.End)
					if ft.Kind == "pause" {
						result += ", late write " + ft.LateWrite
					}
					tl.event(ft.Node, "fault: "+ft.Kind, 0, result, bad)
				}
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
	for _, id := range append(ids, probeAccount) {
		st, err := c.nodes[0].api.account(ctx, id)
		if err != nil {
			return trouble(err)
		}
		finals = append(finals, toFinal(id, st))
	}

	ops := w.ops
	res := summarize(ops, fs)
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
		err = writePlot(out, ops, fs, w.since())
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return trouble(err)
		}
		tl.note("plot: %s", f.plot)
	}
	pausesTried := 0
	for _, ft := range fs {
		if ft.Kind == "pause" {
			pausesTried++
		}
	}
	printCheck(tl, res, f.history, pausesTried)
	tl.result(res)
	switch {
	case !res.Valid:
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d violations", len(all))}
	case pausesTried > 0 && res.FenceRejected == 0:
		// A fault that did not bite proves nothing: the pauses froze nodes
		// inside leases, so a working fence must have refused their writes.
		return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%d pause faults, but the fence refused no write: the pauses did not bite, or the fence is gone", pausesTried)}
	}
	return nil
}

// summarize counts outcomes, codes and fence refusals, the last over every
// attempt (a refused attempt may have been retried).
func summarize(ops []op, fs []fault) checkResult {
	res := checkResult{Operations: len(ops), Outcomes: map[string]int{}, Codes: map[string]int{}, Faults: map[string]int{}}
	for _, o := range ops {
		res.Outcomes[o.Outcome]++
		attempts := o.Attempts
		if len(attempts) == 0 { // a read: its one request
			attempts = []attempt{{Outcome: o.Outcome, Code: o.Code}}
		} else {
			res.Attempts += len(attempts)
			if len(attempts) > 1 {
				res.Retried++
			}
		}
		for _, a := range attempts {
			if a.Code != "" {
				res.Codes[a.Code]++
			}
			if isFenceRefusal(a.Code) {
				res.FenceRejected++
			}
			if a.Replayed {
				res.Replays++
			}
		}
	}
	for _, ft := range fs {
		if ft.Error != "" {
			continue
		}
		res.Faults[ft.Kind]++
		if ft.Kind == "pause" {
			res.PauseProbes++
			if isFenceRefusal(ft.LateWrite) {
				res.ProbesFenced++
			}
		}
	}
	return res
}

// isFenceRefusal: the codes of a write that the fence refused.
func isFenceRefusal(code string) bool {
	return code == "stale_fencing_token" || code == "lease_expired"
}

func randomOp(rng *rand.Rand, client, seq int, ids []int64, nodes []*node, strategies []string) op {
	o := op{Client: client, Account: ids[rng.IntN(len(ids))], Node: nodes[rng.IntN(len(nodes))].name,
		Key: fmt.Sprintf("c%d-%d", client, seq)}
	switch r := rng.Float64(); {
	case r < 0.35:
		o.Kind, o.Amount, o.Strategy = "deposit", 1+rng.Int64N(100), "row"
	case r < 0.85:
		o.Kind, o.Amount, o.Strategy = "withdrawal", 1+rng.Int64N(300), strategies[rng.IntN(len(strategies))]
		if strings.HasPrefix(o.Strategy, "lease") && o.Amount%3 == 0 { // a third of lease withdrawals pause inside their lease,
			o.Hold = 300 // so that faults land in critical sections
		}
	case r < 0.95:
		o.Kind, o.Key = "read", ""
	default:
		o.Kind, o.Key = "ledger", ""
	}
	return o
}

// perform runs o, starting on its node. A read is one request. A write is
// retried, while the run lasts, when its outcome is unknown (no answer, a
// timeout, 503 outcome_unknown, 500) or it was refused for want of the
// database or a lock (503 database_unavailable, lock_timeout): with the same
// body and Idempotency-Key, on the next of nodes, up to maxAttempts in all.
// The idempotency record makes the attempts together apply it at most once.
func (w *workload) perform(ctx context.Context, o *op, nodes []*node, timeout time.Duration) {
	next := 0
	for i, n := range nodes {
		if n.name == o.Node {
			next = i
		}
	}
	if !isWrite(*o) {
		a := w.attempt(ctx, nodes[next], o, timeout)
		o.Invoke, o.Complete, o.Outcome, o.Code = a.Invoke, a.Complete, a.Outcome, a.Code
		return
	}
	for i := 1; ; i++ {
		a := w.attempt(ctx, nodes[next], o, timeout)
		o.Attempts = append(o.Attempts, a)
		retry := a.Outcome == outcomeInfo || a.Code == "database_unavailable" || a.Code == "lock_timeout"
		if !retry || i == maxAttempts || w.runCx.Err() != nil {
			break
		}
		select {
		case <-w.runCx.Done():
		case <-time.After(time.Duration(i) * 150 * time.Millisecond):
		}
		next = (next + 1) % len(nodes)
	}
	settle(o)
}

// attempt sends o to n once and classifies the answer: ok (applied), fail
// (a refusal: nothing was applied, nor ever will be by this request) or info
// (no answer, or an answer that does not say whether anything was applied).
func (w *workload) attempt(ctx context.Context, n *node, o *op, timeout time.Duration) attempt {
	a := attempt{Node: n.name, Invoke: w.since()}
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
		r, err = n.api.withdraw(ctx, o.Account, withdrawal{Amount: o.Amount, Strategy: o.Strategy, HoldMS: o.Hold}, map[string]string{"Idempotency-Key": o.Key})
	}
	a.Complete, a.Replayed = w.since(), r.Replayed
	switch {
	case err != nil:
		a.Outcome, a.Code = outcomeInfo, "no_answer"
	case r.Status == http.StatusOK || r.Status == http.StatusCreated:
		a.Outcome = outcomeOK
		o.Balance, o.Token = r.int("balance"), r.int("fence_token")
	case r.Status >= 400 && r.Status < 500, r.Code == "lock_timeout", r.Code == "database_unavailable":
		// Refusals, and 503s that bankd gives only when nothing was committed.
		a.Outcome, a.Code = outcomeFail, r.Code
	default:
		a.Outcome, a.Code = outcomeInfo, r.Code
	}
	return a
}

// inject applies one fault and heals it before returning.
func inject(ctx context.Context, c *cluster, w *workload, probeAccount int64, ft *fault, i int) error {
	// Rotate through the nodes out of step with the fault kinds, so that every
	// kind of fault hits every node in turn.
	n := c.nodes[(i+i/len(c.nodes))%len(c.nodes)]
	if !c.own {
		n = c.nodes[0] // only node-a has a --docker name
	}
	ft.Node = n.name
	switch ft.Kind {
	case "pause":
		return pauseInLease(ctx, c, w, n, probeAccount, ft, i)
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

func printCheck(tl *timeline, r checkResult, history string, pausesTried int) {
	tl.printf("\n%d operations: %d ok, %d fail, %d info (unknown outcome)\n", r.Operations, r.Outcomes[outcomeOK], r.Outcomes[outcomeFail], r.Outcomes[outcomeInfo])
	tl.printf("writes retried with their Idempotency-Key: %d (%d attempts for all writes); answers that replayed an earlier attempt's outcome: %d\n", r.Retried, r.Attempts, r.Replays)
	tl.printf("faults: %v\n", r.Faults)
	tl.printf("refusals and unknowns by code, per attempt: %v\n", r.Codes)
	tl.printf("writes refused by the fence: %d; pauses inside a lease whose late write the fence refused: %d of %d\n", r.FenceRejected, r.ProbesFenced, r.PauseProbes)
	if pausesTried > 0 && r.FenceRejected == 0 {
		tl.printf("%s: %d pause faults, but the fence refused no write\n", tl.paint("FAULTS DID NOT BITE", bad), pausesTried)
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
