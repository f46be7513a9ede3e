package history

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Workload is a run of the bank test: Clients run random operations on
// Accounts through Nodes for Duration, while Inject applies the Faults in
// turn, one every FaultEvery.
type Workload struct {
	Clients  int
	Duration time.Duration
	// Timeout is the client timeout of half the clients; the other half
	// wait five times as long.
	Timeout    time.Duration
	Accounts   []int64
	Nodes      []Node
	Strategies []string // of withdrawals

	Faults     []string
	FaultEvery time.Duration
	// Inject applies fault number i, of kind ft.Kind, fills in ft (its node,
	// what it saw) and heals it before it returns; it may perform and record
	// operations of its own through r.
	Inject func(ctx context.Context, r *Recorder, ft *Fault, i int) error
	// Injected, if set, hears of every fault once healed (err: it could not
	// be injected).
	Injected func(ft Fault, err error)
	// Progress, if set, hears how many operations the history holds, every
	// hundred.
	Progress func(ops int)
}

// Run runs the workload and returns its recorder, whose history is
// complete, and the faults injected. Every fault is healed when it returns.
func (w Workload) Run(ctx context.Context) (*Recorder, []Fault) {
	window, stop := context.WithTimeout(ctx, w.Duration)
	defer stop()
	r := NewRecorder(window)
	var (
		mu     sync.Mutex
		faults []Fault
		wg     sync.WaitGroup
	)
	for client := range w.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(client), uint64(r.start.UnixNano())))
			for seq := 0; window.Err() == nil; seq++ {
				o := randomOp(rng, client, seq, w.Accounts, w.Nodes, w.Strategies)
				// Half the clients give up before a paused node resumes (unknown
				// outcomes); the other half wait long enough to hear the fence.
				timeout := w.Timeout
				if client%2 == 1 {
					timeout *= 5
				}
				r.Perform(ctx, &o, w.Nodes, timeout)
				if n := r.Record(o); n%100 == 0 && w.Progress != nil {
					w.Progress(n)
				}
			}
		})
	}
	if len(w.Faults) > 0 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-window.Done():
					return
				case <-time.After(w.FaultEvery):
				}
				if window.Err() != nil {
					return
				}
				ft := Fault{Kind: w.Faults[i%len(w.Faults)], Start: r.Since()}
				err := w.Inject(ctx, r, &ft, i)
				ft.End = r.Since()
				if err != nil {
					ft.Error = err.Error()
				}
				if w.Injected != nil {
					w.Injected(ft, err)
				}
				mu.Lock()
				faults = append(faults, ft)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r, faults
}

// randomOp draws client's next operation: a third deposits, half
// withdrawals (a third of the lease ones holding inside their lease), the
// rest balance and ledger reads; each write with its own Idempotency-Key.
func randomOp(rng *rand.Rand, client, seq int, ids []int64, nodes []Node, strategies []string) Op {
	o := Op{Client: client, Account: ids[rng.IntN(len(ids))], Node: nodes[rng.IntN(len(nodes))].Name,
		Key: fmt.Sprintf("c%d-%d", client, seq)}
	switch x := rng.Float64(); {
	case x < 0.35:
		o.Kind, o.Amount, o.Strategy = "deposit", 1+rng.Int64N(100), "row"
	case x < 0.85:
		o.Kind, o.Amount, o.Strategy = "withdrawal", 1+rng.Int64N(300), strategies[rng.IntN(len(strategies))]
		if strings.HasPrefix(o.Strategy, "lease") && o.Amount%3 == 0 { // a third of lease withdrawals pause inside their lease,
			o.Hold = 300 // so that faults land in critical sections
		}
	case x < 0.95:
		o.Kind, o.Key = "read", ""
	default:
		o.Kind, o.Key = "ledger", ""
	}
	return o
}
