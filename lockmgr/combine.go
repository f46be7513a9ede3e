package lockmgr

import (
	"context"
	"sync"
)

// combiner lets concurrent calls of one Manager share a statement, and so a
// commit and its WAL flush (Options.CombineGrants): while combineInFlight
// statements are in flight, further calls queue; when one ends, the first of
// them runs the next statement for all of them. Nobody waits on a timer: a
// lone call runs at once, and batches form only from calls that would have
// waited anyway. Two calls with one key (a resource) never share a statement,
// nor run in two at once, since the second would see (or wait for) the
// first's row: the later waits for a statement after the first's.
type combiner[Q, A any] struct {
	key func(Q) string
	// run answers every call of batch (len ≥ 1), setting a and err.
	run func(ctx context.Context, batch []*call[Q, A])

	mu       sync.Mutex
	pending  []*call[Q, A]
	running  int             // statements in flight, or callers told to run the next
	inFlight map[string]bool // keys of the statements in flight
}

// combineInFlight: how many statements run at once. Two (a second
// connection busy while the first commits) measured no faster than one with
// lockbench on a 2-CPU machine (BENCHMARKS.md), so one, the simplest.
const combineInFlight = 1

type call[Q, A any] struct {
	ctx  context.Context
	q    Q
	a    A
	err  error
	done chan struct{} // closed once a and err are set
	lead chan struct{} // sent once: run the next statement
	// taken: in a batch, to be answered by its runner; told: sent lead and
	// not yet left behind by the statement it ran (under combiner.mu).
	taken, told bool
}

// do runs q alone or with other calls, and returns its answer.
func (c *combiner[Q, A]) do(ctx context.Context, q Q) (A, error) {
	cl := &call[Q, A]{ctx: ctx, q: q, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, cl)
	idle := c.running < combineInFlight
	if idle {
		c.running++
	}
	c.mu.Unlock()
	if idle {
		c.runNext(cl)
	}
	for {
		select {
		case <-cl.done:
			if len(cl.lead) > 0 {
				// Told to run the next statement, but another one took us:
				// pass that on.
				<-cl.lead
				c.handOn()
			}
			return cl.a, cl.err
		case <-cl.lead:
			c.runNext(cl)
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

// runNext runs one statement for self (the caller's own call) and the other
// pending calls whose keys are not in flight, in order of arrival, then hands
// its turn on.
func (c *combiner[Q, A]) runNext(self *call[Q, A]) {
	c.mu.Lock()
	if c.inFlight == nil {
		c.inFlight = map[string]bool{}
	}
	var batch, rest []*call[Q, A]
	for _, cl := range c.pending {
		k := c.key(cl.q)
		if c.inFlight[k] {
			rest = append(rest, cl)
			continue
		}
		c.inFlight[k] = true
		cl.taken = true
		batch = append(batch, cl)
	}
	c.pending = rest
	if !self.taken && len(self.lead) == 0 {
		// Left behind (its key is in flight): to be told again when that
		// statement ends.
		self.told = false
	}
	c.mu.Unlock()
	if len(batch) > 0 {
		// Not any one caller's context: a caller giving up must not cancel
		// its batch-mates' statement. Calls that gave up before being taken
		// left the queue (do).
		c.run(context.WithoutCancel(batch[0].ctx), batch)
		c.mu.Lock()
		for _, cl := range batch {
			delete(c.inFlight, c.key(cl.q))
		}
		c.mu.Unlock()
		for _, cl := range batch {
			close(cl.done)
		}
	}
	c.handOn()
}

// handOn passes the caller's turn to run a statement to the first pending
// call that is not told yet and whose key is not in flight (a call whose key
// is in flight is told when that statement ends), or gives the turn up.
func (c *combiner[Q, A]) handOn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.pending {
		if !cl.told && !c.inFlight[c.key(cl.q)] {
			cl.told = true
			cl.lead <- struct{}{}
			return
		}
	}
	c.running--
}

func index[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
