package account

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/lockmgr"
)

// applyRows applies a row batch — row changes queued on a busy account, or a
// lone one the single statement could not decide — in one transaction
// (runBatch), retried when PostgreSQL aborts it for concurrency alone, and
// returns each change's outcome.
func (s *Service) applyRows(ctx context.Context, batch []*pending) []outcome {
	outs := make([]outcome, len(batch))
	const attempts = 5
	var err error
	for attempt := range attempts {
		clear(outs)
		err = s.runBatch(ctx, batch, outs, nil)
		// A unique violation means a request with one of our keys committed
		// first on a path without the row lock; the next attempt replays it.
		if err == nil || attempt == attempts-1 || !(pgerr.Conflict(err) || uniqueViolation(err)) {
			break
		}
		s.metrics.retried(err)
	}
	if err != nil {
		failAll(outs, batch, err)
	}
	return outs
}

// failAll answers every change of batch with err, in the words of wrap.
func failAll(outs []outcome, batch []*pending, err error) {
	for i, p := range batch {
		outs[i] = outcome{err: wrap(p.kind, err)}
	}
}

// plannedEntry is a change that passed every check: its ledger entry.
type plannedEntry struct {
	index int // into the batch
	after int64
}

// batchPlan is what a batch will write: the balance it read under the row
// lock and its change, the entries, and the refusals to record under their
// idempotency keys.
type batchPlan struct {
	balance, delta int64
	maxToken       int64
	planned        []plannedEntry
	refusals       []*pending
	// lease, for a lease batch: its token goes on every entry; release:
	// the lease ends in this batch's commit (sticky.go).
	lease    *lockmgr.Lease
	release  bool
	wanted   bool // another node waits for the lease
	locks    *lockmgr.Manager
	released *lockmgr.InTxRelease
}

// runBatch applies batch in one transaction of two round trips: BEGIN, the
// row lock and the stored outcomes in one pipeline; the writes and COMMIT in
// the other (a fenced change or a replay adds one round trip). Each round
// trip costs a write and a read on both ends, which on a small machine is
// much of the price of a transaction.
//
// With a lease (the lease strategy), the account row is read without a
// lock, the lease's fence is checked in the transaction (errLeaseRefused
// when it refuses the lease), and the write lands only if the balance is
// still the one read (else errBalanceMoved).
func (s *Service) runBatch(ctx context.Context, batch []*pending, outs []outcome, lt *leaseTx) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// Release destroys a connection left inside a transaction.
	defer conn.Release()

	plan, err := s.readBatch(ctx, conn, batch, outs, lt)
	switch {
	case err == nil && plan == nil: // no such account: every outcome says so
		rollback(ctx, conn)
		lt.rolledBack()
		return nil
	case err != nil:
		rollback(ctx, conn)
		lt.rolledBack()
		if sessionLost(err) {
			return fmt.Errorf("%w: %w", errNotCommitted, err)
		}
		return err
	}
	err = writeBatch(ctx, conn, batch, plan, outs)
	if err != nil {
		lt.rolledBack() // or unknown: a lease granted in it is not used again
	}
	if lt != nil && balanceMoved(err) {
		return errBalanceMoved
	}
	if err == nil && lt != nil {
		lt.released = plan.released != nil
		lt.yielded = lt.released && plan.wanted
	}
	return err
}

// readBatch begins the transaction, locks the account row (or, with a lease,
// reads it unlocked and checks the lease's fence), reads the stored outcomes
// of the batch's keys and checks its fencing tokens, then has the plan
// decide every change. A nil plan means there is nothing to write: the
// account does not exist (every outcome says so). A lease the fence refuses
// is errLeaseRefused, and no outcome is set.
func (s *Service) readBatch(ctx context.Context, conn *pgxpool.Conn, batch []*pending, outs []outcome, lt *leaseTx) (*batchPlan, error) {
	id := batch[0].change.AccountID
	var keys []string
	for _, p := range batch {
		if p.change.IdempotencyKey != "" {
			keys = append(keys, p.change.IdempotencyKey)
		}
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if s.txTimeouts.set() {
		b.Queue(sqlSetTxTimeouts, s.txTimeouts.args()...)
	}
	if lt == nil {
		b.Queue(sqlLockAccount, id)
	} else {
		// The lease first: granted here, or the kept one fenced, either
		// way its row locked until this transaction ends (sticky.go).
		if lt.lease == nil {
			g, err := s.locks.QueueGrant(b, LeaseResource(id), s.node, lt.ttl)
			if err != nil {
				return nil, err
			}
			lt.grant = g
			// Asked even when the grant finds the lease held: a pipeline's
			// results are read in order.
			lt.wanted = s.locks.QueueWanted(b, LeaseResource(id))
		} else {
			lt.fence = s.locks.QueueFence(b, lt.lease)
		}
		b.Queue(sqlReadBalance, id)
	}
	if len(keys) > 0 {
		b.Queue(sqlGetIdempotencies, id, keys)
	}
	start := time.Now()
	br := conn.SendBatch(ctx, b)
	plan := &batchPlan{locks: s.locks}
	var (
		stored   map[string]*storedResult
		leaseErr error
		wanted   bool
		leaseOK  bool
	)
	_, err := br.Exec()
	if err == nil && s.txTimeouts.set() {
		_, err = br.Exec()
	}
	if err == nil && lt != nil {
		var lerr error
		if lt.grant != nil {
			lt.lease, lerr = lt.grant.Read(br)
			var werr error
			if wanted, werr = lt.wanted.Read(br); werr != nil && lerr == nil {
				lerr = werr
			}
		} else {
			wanted, lerr = lt.fence.Read(br)
		}
		var held *lockmgr.HeldError
		switch {
		case lerr == nil:
			leaseOK = true
		case errors.As(lerr, &held):
			leaseErr = held // another holder: nothing is read or written under it
		case lt.fence != nil && isRefusal(fenceRefusal(lerr, lt.lease.Token)):
			// A stale holder learns nothing and records nothing.
			leaseErr = fmt.Errorf("%w: %w", errLeaseRefused, lerr)
		default:
			err = lerr // the database failed, not the lease
		}
	}
	if err == nil {
		err = br.QueryRow().Scan(&plan.balance)
	}
	if lt == nil {
		// Answered once the row is locked (or the wait failed).
		s.metrics.lockedRow(pathBatch, start)
	}
	if err == nil && len(keys) > 0 {
		stored, err = scanStored(br)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if leaseErr != nil && err == nil {
		return nil, leaseErr
	}
	if errors.Is(err, pgx.ErrNoRows) {
		for i := range outs {
			outs[i].err = notFound(id)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := loadStoredEntries(ctx, conn, stored); err != nil {
		return nil, err
	}
	if lt != nil && leaseOK {
		plan.lease, plan.maxToken = lt.lease, lt.lease.Token
		// Keep the lease for the next batch only while there is one, nobody
		// else waits for it, and it has time left; else it ends with this
		// transaction's commit.
		plan.wanted = wanted
		plan.release = wanted || !s.moreLeaseWork(id) || time.Until(lt.lease.Deadline()) < lt.lease.TTL/2
	}
	fences := map[int64]error{}
	for _, p := range batch {
		if t := p.change.FenceToken; t != 0 && stored[p.change.IdempotencyKey] == nil {
			if _, done := fences[t]; !done {
				fences[t] = s.locks.CheckFence(ctx, conn, LeaseResource(id), t)
				if refusal := fenceRefusal(fences[t], t); refusal != nil && !isRefusal(refusal) {
					return nil, refusal // the database failed, not the token
				}
			}
		}
	}
	plan.decide(batch, outs, stored, fences)
	return plan, nil
}

// decide judges every change of batch in order against the balance the
// changes before it leave — a stored outcome replays, a refused fencing
// token records nothing, a refusal is recorded under its key, the rest
// become entries — and sets the outcomes it knows already.
func (plan *batchPlan) decide(batch []*pending, outs []outcome, stored map[string]*storedResult, fences map[int64]error) {
	for i, p := range batch {
		c := p.change
		if prior := stored[c.IdempotencyKey]; c.IdempotencyKey != "" && prior != nil {
			if prior.hash != p.hash {
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
			// A stale writer learns nothing and records nothing.
			outs[i].err = fenceRefusal(fences[c.FenceToken], c.FenceToken)
			continue
		}
		if refusal := refuse(p.kind, plan.balance+plan.delta, c.Amount); refusal != nil {
			outs[i].err = refusal
			if c.IdempotencyKey != "" {
				plan.refusals = append(plan.refusals, p)
			}
			continue
		}
		if p.kind == KindWithdrawal {
			plan.delta -= c.Amount
		} else {
			plan.delta += c.Amount
		}
		plan.maxToken = max(plan.maxToken, c.FenceToken)
		plan.planned = append(plan.planned, plannedEntry{index: i, after: plan.balance + plan.delta})
	}
}

// writeBatch sends the plan's writes and COMMIT in one pipeline. PostgreSQL
// skips the rest of a pipeline after an error, COMMIT included, so a
// statement's error is a certain failure; a lost connection is not, since
// the COMMIT may have run.
func writeBatch(ctx context.Context, conn *pgxpool.Conn, batch []*pending, plan *batchPlan, outs []outcome) error {
	id := batch[0].change.AccountID
	b := &pgx.Batch{}
	if len(plan.planned) > 0 {
		n := len(plan.planned)
		var (
			ords              = make([]int32, n)
			kinds, strategies = make([]string, n), make([]string, n)
			amounts, afters   = make([]int64, n), make([]int64, n)
			tokens            = make([]*int64, n)
			keys, hashes      = make([]*string, n), make([]*string, n)
		)
		for j, pe := range plan.planned {
			p := batch[pe.index]
			ords[j], kinds[j], strategies[j] = int32(j), p.kind, string(p.change.Strategy)
			amounts[j], afters[j] = p.change.Amount, pe.after
			if t := p.change.FenceToken; t != 0 {
				tokens[j] = &t
			}
			if plan.lease != nil {
				tokens[j] = &plan.lease.Token
			}
			keys[j], hashes[j] = nullable(p.change.IdempotencyKey), nullable(hashIfKeyed(p.change, p.hash))
		}
		b.Queue(sqlApplyBatch, id, plan.balance, plan.delta, plan.maxToken, ords, kinds, amounts, afters, strategies, tokens, keys, hashes)
	}
	if len(plan.refusals) > 0 {
		var keys, hashes, codes, messages []string
		for _, p := range plan.refusals {
			var e *Error
			errors.As(outs[slices.Index(batch, p)].err, &e)
			keys, hashes = append(keys, p.change.IdempotencyKey), append(hashes, p.hash)
			codes, messages = append(codes, e.Code), append(messages, e.Message)
		}
		b.Queue(sqlInsertRefusals, id, keys, hashes, codes, messages)
	}
	var release *lockmgr.InTxRelease
	if plan.lease != nil && plan.release {
		release = plan.locks.QueueRelease(b, plan.lease)
	}
	b.Queue("COMMIT")

	br := conn.SendBatch(ctx, b)
	var (
		entries []Entry
		err     error
	)
	if len(plan.planned) > 0 {
		rows, qerr := br.Query()
		if err = qerr; err == nil {
			entries, err = pgx.CollectRows(rows, scanEntry)
		}
	}
	if err == nil && len(plan.refusals) > 0 {
		_, err = br.Exec()
	}
	if err == nil && release != nil {
		err = release.Read(br)
	}
	committing := err == nil
	if err == nil {
		_, err = br.Exec() // COMMIT
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		var pgErr *pgconn.PgError
		switch {
		case !errors.As(err, &pgErr) || (committing && sessionLost(err)):
			// The connection (or the session, during COMMIT) was lost with
			// COMMIT sent: it may have run.
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		case sessionLost(err):
			return fmt.Errorf("%w: %w", errNotCommitted, err)
		}
		rollback(ctx, conn)
		return err // the server refused a statement or the COMMIT: rolled back
	}
	if len(entries) != len(plan.planned) {
		return fmt.Errorf("%w: account %d: %d ledger entries written, want %d", ErrOutcomeUnknown, id, len(entries), len(plan.planned))
	}
	if release != nil {
		release.Released()
		plan.released = release
	}
	slices.SortFunc(entries, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	for j, pe := range plan.planned {
		outs[pe.index].res.Entry = entries[j]
	}
	return nil
}
