package account

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/lockmgr"
)

// Row-strategy changes of one account are combined: while one transaction
// holds the account's row lock, the changes that arrive for the same account
// wait in a queue in this process, and the next transaction applies all of
// them in arrival order — one row lock, one UPDATE and one commit for many
// ledger entries. A hot account then costs the database one commit per batch
// instead of one per change, and no more than one of this node's connections
// ever queues on the account's row lock: hundreds of clients on one account
// wait here, not in PostgreSQL's lock manager.
//
// Every change still gets its own ledger entry, its own balance check against
// the balance the entries before it leave, its own fence check and its own
// idempotency record, in the same transaction as the others; the transaction
// touches one account only (invariant 8). If it fails, every change in it
// fails alike.

// maxBatch bounds one transaction's changes, and so the time the row lock is
// held by one commit.
const maxBatch = 64

// batchTimeout bounds one batch's transaction when the clients that wait for
// it give no deadline of their own; lock_timeout bounds its wait for the row.
const batchTimeout = 30 * time.Second

// change is one queued deposit or withdrawal and the channel its outcome is
// delivered on.
type change struct {
	ctx  context.Context
	kind string
	c    Change
	hash string
	done chan outcome
}

type outcome struct {
	res Result
	err error
}

// combiner keeps a queue per account with changes waiting; a queue exists
// exactly while one goroutine (its worker) drains it.
type combiner struct {
	mu     sync.Mutex
	queues map[int64][]*change
}

// submit queues ch and waits for its outcome or for ch.ctx to end. A change
// that was already taken into a transaction when its context ended is
// waited for: it may commit, and its caller must not be told it did not.
func (s *Service) submit(ch *change) (Result, error) {
	ch.done = make(chan outcome, 1)
	id := ch.c.AccountID
	s.combine.mu.Lock()
	q, busy := s.combine.queues[id]
	s.combine.queues[id] = append(q, ch)
	if !busy {
		go s.drain(id)
	}
	s.combine.mu.Unlock()

	select {
	case out := <-ch.done:
		return out.res, out.err
	case <-ch.ctx.Done():
	}
	s.combine.mu.Lock()
	q = s.combine.queues[id]
	i := slices.Index(q, ch)
	if i >= 0 {
		s.combine.queues[id] = slices.Delete(q, i, i+1)
	}
	s.combine.mu.Unlock()
	if i >= 0 {
		return Result{}, ch.ctx.Err() // never started: nothing happened
	}
	out := <-ch.done
	return out.res, out.err
}

// drain is the worker of account id's queue: it applies batches until the
// queue is empty, then removes it.
func (s *Service) drain(id int64) {
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
		for i, ch := range batch {
			ch.done <- outs[i]
		}
	}
}

// takeBatch takes up to maxBatch changes in arrival order. A change whose
// idempotency key is already in the batch stays queued for the next one, so
// that it replays the first one's outcome instead of racing it.
func takeBatch(queue []*change) (batch, rest []*change) {
	keys := map[string]bool{}
	for _, ch := range queue {
		k := ch.c.IdempotencyKey
		if len(batch) == maxBatch || (k != "" && keys[k]) {
			rest = append(rest, ch)
			continue
		}
		if k != "" {
			keys[k] = true
		}
		batch = append(batch, ch)
	}
	return batch, rest
}

// applyBatch runs batch (changes of one account) in one transaction, retried
// when PostgreSQL aborts it for concurrency alone, and returns each change's
// outcome.
func (s *Service) applyBatch(batch []*change) []outcome {
	// The transaction outlives any one client: it ends when the last of
	// them would have given up, or after batchTimeout.
	deadline := time.Now().Add(batchTimeout)
	for _, ch := range batch {
		if d, ok := ch.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	outs := make([]outcome, len(batch))
	const attempts = 5
	var err error
	for attempt := range attempts {
		clear(outs)
		err = s.inTx(ctx, func(tx pgx.Tx) error { return applyBatchTx(ctx, tx, batch, outs) })
		// A unique violation means a request with one of our keys committed
		// first on a path without the row lock; the next attempt replays it.
		if err == nil || attempt == attempts-1 || !(retryable(err) || uniqueViolation(err)) {
			break
		}
	}
	if err != nil {
		for i, ch := range batch {
			outs[i] = outcome{err: wrap(ch.kind, err)}
		}
	}
	return outs
}

// plannedEntry is a change that passed every check: its ledger entry.
type plannedEntry struct {
	index int // into the batch
	after int64
}

// applyBatchTx is the row strategy for a batch: lock the account row, look
// up stored outcomes and fences, decide every change in order against the
// running balance, then write the balance once, the ledger entries and the
// idempotency records. Refusals are outcomes (recorded under their keys and
// committed); a stale fencing token is refused and records nothing.
func applyBatchTx(ctx context.Context, tx pgx.Tx, batch []*change, outs []outcome) error {
	id := batch[0].c.AccountID
	var balance int64
	if err := tx.QueryRow(ctx, sqlLockAccount, id).Scan(&balance); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			for i := range outs {
				outs[i].err = notFound(id)
			}
			return nil
		}
		return err
	}
	stored, err := replayAll(ctx, tx, id, batch)
	if err != nil {
		return err
	}
	fences := map[int64]error{}
	for _, ch := range batch {
		if t := ch.c.FenceToken; t != 0 && stored[ch.c.IdempotencyKey] == nil {
			if _, done := fences[t]; !done {
				fences[t] = lockmgr.CheckFence(ctx, tx, LeaseResource(id), t)
				if refusal := fenceRefusal(fences[t], t); refusal != nil && !isRefusal(refusal) {
					return refusal // the database failed, not the token
				}
			}
		}
	}

	var (
		planned  []plannedEntry
		delta    int64
		maxToken int64
		records  []idempotencyRecord
	)
	for i, ch := range batch {
		c := ch.c
		if prior := stored[c.IdempotencyKey]; c.IdempotencyKey != "" && prior != nil {
			if prior.hash != ch.hash {
				outs[i].err = errorf(CodeIdempotencyKeyReused,
					"Idempotency-Key %q was already used for a different request on this account", c.IdempotencyKey)
				continue
			}
			outs[i].res = prior.Result
			if prior.refusal != nil {
				outs[i].err = prior.refusal
			}
			continue
		}
		if c.FenceToken != 0 && fences[c.FenceToken] != nil {
			outs[i].err = fenceRefusal(fences[c.FenceToken], c.FenceToken)
			continue
		}
		if refusal := refuse(ch.kind, balance+delta, c.Amount); refusal != nil {
			outs[i].err = refusal
			records = append(records, idempotencyRecord{ch: ch, refusal: refusal})
			continue
		}
		if ch.kind == KindWithdrawal {
			delta -= c.Amount
		} else {
			delta += c.Amount
		}
		maxToken = max(maxToken, c.FenceToken)
		planned = append(planned, plannedEntry{index: i, after: balance + delta})
	}

	if len(planned) > 0 {
		var after int64
		if err := tx.QueryRow(ctx, sqlAddToBalance, id, delta, maxToken).Scan(&after); err != nil {
			return err
		}
		if after != balance+delta {
			// Impossible while we hold the row lock; never commit if it happens.
			return fmt.Errorf("account %d: balance %d after the batch, want %d", id, after, balance+delta)
		}
		entries, err := insertEntries(ctx, tx, batch, planned)
		if err != nil {
			return err
		}
		for j, p := range planned {
			outs[p.index].res.Entry = entries[j]
			records = append(records, idempotencyRecord{ch: batch[p.index], entryID: &entries[j].ID})
		}
	}
	return rememberAll(ctx, tx, id, records)
}

// isRefusal reports whether err is a business outcome (*Error).
func isRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

type storedResult struct {
	storedOutcome
	hash string
}

// replayAll reads the stored outcomes of the batch's idempotency keys.
func replayAll(ctx context.Context, tx pgx.Tx, id int64, batch []*change) (map[string]*storedResult, error) {
	var keys []string
	for _, ch := range batch {
		if ch.c.IdempotencyKey != "" {
			keys = append(keys, ch.c.IdempotencyKey)
		}
	}
	stored := map[string]*storedResult{}
	if len(keys) == 0 {
		return stored, nil
	}
	rows, err := tx.Query(ctx, sqlGetIdempotencies, id, keys)
	if err != nil {
		return nil, err
	}
	var entryIDs []int64
	for rows.Next() {
		var (
			key           string
			r             storedResult
			entryID       *int64
			code, message *string
		)
		if err := rows.Scan(&key, &r.hash, &entryID, &code, &message); err != nil {
			rows.Close()
			return nil, err
		}
		r.Replayed = true
		if entryID == nil {
			r.refusal = &Error{Code: *code, Message: *message}
		} else {
			r.Entry.ID = *entryID
			entryIDs = append(entryIDs, *entryID)
		}
		stored[key] = &r
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(entryIDs) == 0 {
		return stored, nil
	}
	rows, _ = tx.Query(ctx, sqlGetEntries, entryIDs)
	entries, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		for _, r := range stored {
			if r.refusal == nil && r.Entry.ID == e.ID {
				r.Entry = e
			}
		}
	}
	return stored, nil
}

// insertEntries appends the planned entries in batch order and returns them
// in that order: the ids of one INSERT are drawn in the order of its rows.
func insertEntries(ctx context.Context, tx pgx.Tx, batch []*change, planned []plannedEntry) ([]Entry, error) {
	n := len(planned)
	var (
		ords              = make([]int32, n)
		kinds, strategies = make([]string, n), make([]string, n)
		amounts, afters   = make([]int64, n), make([]int64, n)
		tokens            = make([]*int64, n)
		keys, hashes      = make([]*string, n), make([]*string, n)
	)
	for j, p := range planned {
		ch := batch[p.index]
		ords[j], kinds[j], strategies[j] = int32(j), ch.kind, string(ch.c.Strategy)
		amounts[j], afters[j] = ch.c.Amount, p.after
		if t := ch.c.FenceToken; t != 0 {
			tokens[j] = &t
		}
		keys[j], hashes[j] = nullable(ch.c.IdempotencyKey), nullable(hashIfKeyed(ch.c, ch.hash))
	}
	rows, _ := tx.Query(ctx, sqlInsertEntries, batch[0].c.AccountID, ords, kinds, amounts, afters, strategies, tokens, keys, hashes)
	entries, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, err
	}
	if len(entries) != n {
		return nil, fmt.Errorf("inserted %d ledger entries, want %d", len(entries), n)
	}
	slices.SortFunc(entries, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	return entries, nil
}

// idempotencyRecord is the outcome to store under a change's key: its entry,
// or its refusal.
type idempotencyRecord struct {
	ch      *change
	entryID *int64
	refusal *Error
}

// rememberAll stores the outcomes of the batch's keyed changes in its
// transaction, so that outcomes and changes commit or vanish together.
func rememberAll(ctx context.Context, tx pgx.Tx, id int64, records []idempotencyRecord) error {
	var (
		keys, hashes    []string
		entryIDs        []*int64
		codes, messages []*string
	)
	for _, r := range records {
		if r.ch.c.IdempotencyKey == "" {
			continue
		}
		var code, message *string
		if r.refusal != nil {
			code, message = &r.refusal.Code, &r.refusal.Message
		}
		keys, hashes = append(keys, r.ch.c.IdempotencyKey), append(hashes, r.ch.hash)
		entryIDs, codes, messages = append(entryIDs, r.entryID), append(codes, code), append(messages, message)
	}
	if len(keys) == 0 {
		return nil
	}
	_, err := tx.Exec(ctx, sqlInsertIdempotencies, id, keys, hashes, entryIDs, codes, messages)
	return err
}
