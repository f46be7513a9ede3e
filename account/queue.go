package account

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// maxBatch bounds one transaction's changes, and so the time the row lock is
// held by one commit.
const maxBatch = 64

// batchTimeout bounds one batch's transaction when the clients that wait for
// it give no deadline of their own; lock_timeout bounds its wait for the row.
const batchTimeout = 30 * time.Second

// pending is a Change waiting in its account's queue for a transaction: the
// Change, what kind it is, the hash of the request (for its idempotency
// record), its client's context, and the channel its outcome is delivered
// on.
type pending struct {
	ctx    context.Context
	kind   string
	change Change
	hash   string
	done   chan outcome
}

// outcome is what one pending change comes to: its Result, or its error.
type outcome struct {
	res Result
	err error
}

// combiner keeps a queue per account with changes waiting (Combining, in the
// package comment); a queue exists exactly while one goroutine works on the
// account: the first submitter, applying its own change, then a worker that
// drains what queued behind it.
type combiner struct {
	mu     sync.Mutex
	queues map[queueKey][]*pending

	// beforeApply, when set (by tests only), runs before every batch is
	// applied: the place to inject a panic.
	beforeApply func(batch []*pending)
}

// queueKey separates an account's row changes from its lease withdrawals:
// they lock differently, so they cannot share a transaction.
type queueKey struct {
	account  int64
	strategy Strategy
}

// submit queues p and waits for its outcome or for p.ctx to end. A change
// that was already taken into a transaction when its context ended is
// waited for: it may commit, and its caller must not be told it did not.
func (s *Service) submit(p *pending) (Result, error) {
	p.done = make(chan outcome, 1)
	id := queueKey{p.change.AccountID, p.change.Strategy}
	s.combine.mu.Lock()
	q, busy := s.combine.queues[id]
	if !busy {
		// Nobody is working on this account: apply p at once, on this
		// goroutine (no hand-off to pay for the common, uncontended case),
		// and leave whatever queued meanwhile to a worker.
		s.combine.queues[id] = nil
		s.combine.mu.Unlock()
		out := s.applyBatch([]*pending{p})[0]
		s.combine.mu.Lock()
		if len(s.combine.queues[id]) == 0 {
			delete(s.combine.queues, id)
		} else {
			go s.drain(id)
		}
		s.combine.mu.Unlock()
		return out.res, out.err
	}
	s.combine.queues[id] = append(q, p)
	s.combine.mu.Unlock()

	select {
	case out := <-p.done:
		return out.res, out.err
	case <-p.ctx.Done():
	}
	s.combine.mu.Lock()
	q = s.combine.queues[id]
	i := slices.Index(q, p)
	if i >= 0 {
		s.combine.queues[id] = slices.Delete(q, i, i+1)
	}
	s.combine.mu.Unlock()
	if i >= 0 {
		return Result{}, p.ctx.Err() // never started: nothing happened
	}
	out := <-p.done
	return out.res, out.err
}

// drain is the worker of queue id: it applies batches until the queue is
// empty, then removes it.
func (s *Service) drain(id queueKey) {
	for {
		s.combine.mu.Lock()
		batch, rest := takeBatch(s.combine.queues[id])
		if len(batch) == 0 {
			delete(s.combine.queues, id)
			s.combine.mu.Unlock()
			return
		}
		s.combine.queues[id] = rest
		s.combine.mu.Unlock()

		outs := s.applyBatch(batch)
		for i, p := range batch {
			p.done <- outs[i]
		}
	}
}

// takeBatch takes up to maxBatch changes in arrival order. A change whose
// idempotency key is already in the batch stays queued for the next one, so
// that it replays the first one's outcome instead of racing it.
func takeBatch(queue []*pending) (batch, rest []*pending) {
	keys := map[string]bool{}
	for _, p := range queue {
		k := p.change.IdempotencyKey
		if len(batch) == maxBatch || (k != "" && keys[k]) {
			rest = append(rest, p)
			continue
		}
		if k != "" {
			keys[k] = true
		}
		batch = append(batch, p)
	}
	return batch, rest
}

// applyBatch applies batch (changes of one account, one strategy) on its
// path and returns each change's outcome: a lease batch under one lease
// (lease.go); a change alone in one statement (lone.go) if that decides it;
// else a row batch in one transaction (batch.go).
//
// A panic while applying (a bug) is recovered here, so that it costs only
// this batch: every change in it is answered ErrOutcomeUnknown — its
// transaction may have committed before the panic, and a retry with the same
// Idempotency-Key tells — and the account's queue is handed on as usual, so
// the changes behind it and the account itself keep working. Unrecovered, it
// would leave the queue marked busy with no worker, and the account stuck on
// this node until a restart.
func (s *Service) applyBatch(batch []*pending) (outs []outcome) {
	defer func() {
		for i := range outs {
			outs[i].res.BatchSize = len(batch)
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			err := fmt.Errorf("%w: applying a batch of %d changes to account %d panicked: %v\n%s",
				ErrOutcomeUnknown, len(batch), batch[0].change.AccountID, v, debug.Stack())
			outs = make([]outcome, len(batch))
			for i := range outs {
				outs[i] = outcome{err: err}
			}
		}
	}()
	if s.combine.beforeApply != nil {
		s.combine.beforeApply(batch)
	}
	ctx, cancel := batchContext(batch)
	defer cancel()
	if batch[0].change.Strategy == StrategyLease {
		s.metrics.applied(pathLeaseBatch, len(batch))
		return s.applyLeased(ctx, batch)
	}
	if len(batch) == 1 {
		if out, done := s.applyLone(ctx, batch[0]); done {
			s.metrics.applied(pathLone, 1)
			return []outcome{out}
		}
	}
	s.metrics.applied(pathBatch, len(batch))
	return s.applyRows(ctx, batch)
}

// batchContext bounds a batch's work. The transaction outlives any one
// client: it ends when the last of them would have given up, or after
// batchTimeout.
func batchContext(batch []*pending) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(batchTimeout)
	for _, p := range batch {
		if d, ok := p.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	return context.WithDeadline(context.Background(), deadline)
}
