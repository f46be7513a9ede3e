package lockmgr

import (
	"context"
	"sync"
)

// combiner lets concurrent calls of one Manager share a statement, and so a
// commit and its WAL flush (Options.CombineGrants): while one statement is in
// flight, further calls queue; when it ends, the first of them runs the next
// statement for all of them. Nobody waits on a timer: a lone call runs at
// once, and batches form only from calls that would have waited for a flush
// anyway. Two calls with one key (a resource) never share a statement, since
// the second would see the first's row: the later waits for the next one.
type combiner[Q, A any] struct {
	key func(Q) string
	// run answers every call of batch (len ≥ 1), setting a and err.
	run func(ctx context.Context, batch []*call[Q, A])

	mu      sync.Mutex
	pending []*call[Q, A]
	busy    bool // a statement is in flight, or a caller has been told to run the next
}

type call[Q, A any] struct {
	ctx  context.Context
	q    Q
	a    A
	err  error
	done chan struct{} // closed once a and err are set
	lead chan struct{} // sent once: run the next statement
	// taken: in a batch, to be answered by its runner (under combiner.mu).
	taken bool
}

// do runs q alone or with other calls, and returns its answer.
func (c *combiner[Q, A]) do(ctx context.Context, q Q) (A, error) {
	cl := &call[Q, A]{ctx: ctx, q: q, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, cl)
	idle := !c.busy
	c.busy = true
	c.mu.Unlock()
	if idle {
		c.runNext()
	}
	for {
		select {
		case <-cl.done:
			return cl.a, cl.err
		case <-cl.lead:
			c.runNext()
		case <-ctx.Done():
			c.mu.Lock()
			if !cl.taken {
				if i := index(c.pending, cl); i >= 0 {
					c.pending = append(c.pending[:i], c.pending[i+1:]...)
					c.mu.Unlock()
					if len(cl.lead) > 0 {
						// Told to run the next statement: pass that on.
						c.handOn()
					}
					var zero A
					return zero, ctx.Err()
				}
			}
			c.mu.Unlock()
			ctx = context.Background() // answered by the batch in flight
		}
	}
}

// runNext runs one statement for the pending calls with distinct keys, in
// order of arrival, then hands the next one on.
func (c *combiner[Q, A]) runNext() {
	c.mu.Lock()
	var batch, rest []*call[Q, A]
	seen := map[string]bool{}
	for _, cl := range c.pending {
		k := c.key(cl.q)
		if seen[k] {
			rest = append(rest, cl)
			continue
		}
		seen[k] = true
		cl.taken = true
		batch = append(batch, cl)
	}
	c.pending = rest
	c.mu.Unlock()
	if len(batch) > 0 {
		// Not any one caller's context: a caller giving up must not cancel
		// its batch-mates' statement. Calls that gave up before being taken
		// left the queue (do).
		c.run(context.WithoutCancel(batch[0].ctx), batch)
		for _, cl := range batch {
			close(cl.done)
		}
	}
	c.handOn()
}

// handOn tells the first pending call to run the next statement, or marks
// the combiner idle.
func (c *combiner[Q, A]) handOn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		c.busy = false
		return
	}
	select {
	case c.pending[0].lead <- struct{}{}:
	default: // already told
	}
}

func index[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
