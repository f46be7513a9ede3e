package account

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/lockmgr"
)

// The row-strategy changes of one account are combined, and so are its lease
// withdrawals: while one transaction holds the account's row lock (or its
// lease), the changes that arrive for the same account wait in a queue in
// this process, and the next transaction applies all of them in arrival
// order — one row lock (or one lease), one UPDATE and one commit for many
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

// combiner keeps a queue per account with changes waiting; a queue exists
// exactly while one goroutine works on the account: the first submitter,
// applying its own change, then a worker that drains what queued behind it.
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

// applyBatch runs batch (changes of one account, one strategy) in one
// transaction, retried when PostgreSQL aborts it for concurrency alone, and
// returns each change's outcome.
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
		return s.applyLeased(ctx, batch)
	}
	if len(batch) == 1 {
		if out, done := s.applyLone(ctx, batch[0]); done {
			return []outcome{out}
		}
	}
	outs = make([]outcome, len(batch))
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
	}
	if err != nil {
		failAll(outs, batch, err)
	}
	return outs
}

// applyLone tries a lone row change in one statement, one round trip: its
// UPDATE takes the row lock and changes the balance only if the result is
// not negative, and the same statement appends the entry and stores the
// idempotency record. That is the common case of an account nobody else is
// changing. Everything else falls back to the batch path, which decides it
// (done false): no row (a refusal for funds, or no such account), a fencing
// token (its check needs a statement of its own), a statement error — the
// key's unique index refusing a second record (a stored outcome to replay),
// an overflow, a conflict with another transaction (the batch path retries
// it). The statement committed alone, so its failure changed nothing; only a
// lost session or connection leaves its outcome unknown. The database's
// other failures are answered at once: a lock wait that ran out, or a
// database that cannot serve the statement (read-only, cancelled, no
// session), would fail the batch path too.
func (s *Service) applyLone(ctx context.Context, p *pending) (out outcome, done bool) {
	c := p.change
	if c.FenceToken != 0 {
		return outcome{}, false
	}
	delta := c.Amount
	if p.kind == KindWithdrawal {
		delta = -c.Amount
	}
	rows, _ := s.pool.Query(ctx, sqlApplyLone, c.AccountID, delta, p.kind, c.Amount, string(c.Strategy),
		nullable(c.IdempotencyKey), nullable(hashIfKeyed(c, p.hash)))
	entry, err := pgx.CollectExactlyOneRow(rows, scanEntry)
	var pgErr *pgconn.PgError
	switch class := pgerr.Classify(err); {
	case err == nil:
		return outcome{res: Result{Entry: entry}}, true
	case errors.Is(err, pgx.ErrNoRows):
		return outcome{}, false
	case class == pgerr.Unavailable, pgerr.LockNotAvailable(err):
		return outcome{err: wrap(p.kind, err)}, true // not run, or failed: nothing happened
	case class == pgerr.SessionLost, !errors.As(err, &pgErr):
		return outcome{err: wrap(p.kind, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))}, true
	}
	return outcome{}, false
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
	// lease, for a lease batch: its token goes on every entry.
	lease *lockmgr.Lease
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
func (s *Service) runBatch(ctx context.Context, batch []*pending, outs []outcome, lease *lockmgr.Lease) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// Release destroys a connection left inside a transaction.
	defer conn.Release()

	plan, err := readBatch(ctx, conn, batch, outs, lease)
	if err == nil && plan == nil {
		err = errNothingToWrite
	}
	if err != nil {
		rollback(ctx, conn)
		switch {
		case errors.Is(err, errNothingToWrite):
			return nil
		case sessionLost(err):
			return fmt.Errorf("%w: %w", errNotCommitted, err)
		}
		return err
	}
	err = writeBatch(ctx, conn, batch, plan, outs)
	if lease != nil && balanceMoved(err) {
		return errBalanceMoved
	}
	return err
}

// errNothingToWrite ends a batch whose account does not exist.
var errNothingToWrite = errors.New("nothing to write")

// errLeaseRefused: the fence refused a lease batch's lease (it ran out, or a
// newer one was granted); the batch wrote nothing.
var errLeaseRefused = errors.New("the fence refused the batch's lease")

// errBalanceMoved: a writer without the lease (a row change or a deposit)
// changed the balance between a lease write's read and its write — a lease
// batch's or a lone lease withdrawal's — so the write wrote nothing; it reads
// again while the lease lasts.
var errBalanceMoved = errors.New("balance changed since it was read")

// balanceMoved reports whether err is sqlApplyBatch's guard: the balance was
// not the one the batch read, so its CASE wrote NULL.
func balanceMoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23502" && pgErr.ColumnName == "balance"
}

// readBatch begins the transaction, locks the account row (or, with a lease,
// reads it unlocked and checks the lease's fence), reads the stored outcomes
// of the batch's keys and checks its fencing tokens, then decides every
// change in order against the running balance. A nil plan means there is
// nothing to write: the account does not exist (every outcome says so). A
// lease the fence refuses is errLeaseRefused, and no outcome is set.
func readBatch(ctx context.Context, conn *pgxpool.Conn, batch []*pending, outs []outcome, lease *lockmgr.Lease) (*batchPlan, error) {
	id := batch[0].change.AccountID
	var keys []string
	for _, p := range batch {
		if p.change.IdempotencyKey != "" {
			keys = append(keys, p.change.IdempotencyKey)
		}
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	if lease == nil {
		b.Queue(sqlLockAccount, id)
	} else {
		b.Queue(sqlReadBalance, id)
	}
	if len(keys) > 0 {
		b.Queue(sqlGetIdempotencies, id, keys)
	}
	br := conn.SendBatch(ctx, b)
	plan := &batchPlan{lease: lease}
	var stored map[string]*storedResult
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&plan.balance)
	}
	if err == nil && len(keys) > 0 {
		stored, err = scanStored(br)
	}
	if closeErr := br.Close(); err == nil {
		err = closeErr
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
	if lease != nil {
		if err := lockmgr.CheckFence(ctx, conn, lease.Resource, lease.Token); err != nil {
			if !isRefusal(fenceRefusal(err, lease.Token)) {
				return nil, err // the database failed, not the lease
			}
			// A stale holder learns nothing and records nothing.
			return nil, fmt.Errorf("%w: %w", errLeaseRefused, err)
		}
		plan.maxToken = lease.Token
	}
	fences := map[int64]error{}
	for _, p := range batch {
		if t := p.change.FenceToken; t != 0 && stored[p.change.IdempotencyKey] == nil {
			if _, done := fences[t]; !done {
				fences[t] = lockmgr.CheckFence(ctx, conn, LeaseResource(id), t)
				if refusal := fenceRefusal(fences[t], t); refusal != nil && !isRefusal(refusal) {
					return nil, refusal // the database failed, not the token
				}
			}
		}
	}

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
	return plan, nil
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
	slices.SortFunc(entries, func(a, b Entry) int { return cmp.Compare(a.ID, b.ID) })
	for j, pe := range plan.planned {
		outs[pe.index].res.Entry = entries[j]
	}
	return nil
}

// rollback ends a transaction left open or failed on conn; if that fails too,
// Release destroys the connection.
func rollback(ctx context.Context, conn *pgxpool.Conn) {
	if pc := conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
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

// scanStored reads the stored outcomes of a batch's idempotency keys.
func scanStored(br pgx.BatchResults) (map[string]*storedResult, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[string]*storedResult{}
	for rows.Next() {
		var (
			key           string
			r             storedResult
			entryID       *int64
			code, message *string
		)
		if err := rows.Scan(&key, &r.hash, &entryID, &code, &message); err != nil {
			return nil, err
		}
		r.Replayed = true
		if entryID == nil {
			r.refusal = &Error{Code: *code, Message: *message}
		} else {
			r.Entry.ID = *entryID
		}
		stored[key] = &r
	}
	return stored, rows.Err()
}

// loadStoredEntries fills in the entries of stored successes, for replay.
func loadStoredEntries(ctx context.Context, conn *pgxpool.Conn, stored map[string]*storedResult) error {
	byID := map[int64]*storedResult{}
	var ids []int64
	for _, r := range stored {
		if r.refusal == nil {
			byID[r.Entry.ID] = r
			ids = append(ids, r.Entry.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, _ := conn.Query(ctx, sqlGetEntries, ids)
	entries, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return err
	}
	for _, e := range entries {
		byID[e.ID].Entry = e
	}
	return nil
}
