package lockmgr

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// Options configure a Manager.
type Options struct {
	// SafetyMargin is taken off every lease's local deadline (see
	// Lease.Deadline) to allow for the local clock running fast. Default:
	// a twentieth of the TTL.
	SafetyMargin func(ttl time.Duration) time.Duration
	// Logger receives the lock events at info: grants, takeovers of leases
	// that ran out, releases, leases lost by their KeepAlive, refused fences.
	// Never a lease id. Default: none.
	Logger *slog.Logger
	// Listen is the connection on which the Manager LISTENs for releases and
	// registers its waiters (session advisory locks). It must reach
	// PostgreSQL directly: through a pooler in transaction mode (PgBouncer)
	// notifications never arrive and a session's advisory lock lands on
	// whichever server connection ran it. Default: the pool's own
	// connection settings, right when the pool is not behind such a pooler.
	Listen *pgx.ConnConfig
	// NoListen says there is no direct connection at all: waiters wake when
	// the lease they wait for runs out (or at once for a release through
	// this Manager), never on another process's release. New logs this
	// once, since waits can then last a whole TTL longer.
	NoListen bool
	// CombineGrants lets concurrent TryAcquire and Acquire calls of this
	// Manager for different resources share one statement, and so one
	// commit and one WAL flush; releases likewise (combine.go). A call never
	// waits for others to come: batches form only while a statement is in
	// flight. The price: one transaction then writes the lease rows of
	// several resources, which a deployment that shards resources across
	// databases cannot do. Default: each call commits alone.
	CombineGrants bool
}

// Manager grants, renews and releases leases in PostgreSQL. It is safe for
// concurrent use. Close it to stop its notification listener.
type Manager struct {
	pool     *pgxpool.Pool
	margin   func(time.Duration) time.Duration
	listener *listener
	metrics  *Metrics
	log      *slog.Logger

	mu       sync.Mutex
	lines    map[string]*line // Acquire calls waiting, per resource (queue.go)
	connects int              // times the listener has connected (listening)

	grants   *combiner[grantQ, grantA]     // nil unless Options.CombineGrants
	releases *combiner[releaseQ, releaseA] // likewise
}

// New returns a Manager on pool, whose database must be migrated (package
// migrations). Waiters are woken through LISTEN on a connection of their own,
// opened on first need with the pool's connection settings (or
// Options.Listen), so that a busy pool can neither delay a wake-up nor be
// used up by one.
//
// The pool may go through a pooler in transaction mode: every statement of
// the Manager is one transaction and relies on no session state (its only
// settings are transaction-local, its only advisory lock in a statement is
// transaction-level), and it prepares nothing on the server when the pool's
// DefaultQueryExecMode says so (default_query_exec_mode=exec or
// cache_describe in the URL). Then give Options.Listen or NoListen.
func New(pool *pgxpool.Pool, opts Options) *Manager {
	margin := opts.SafetyMargin
	if margin == nil {
		margin = func(ttl time.Duration) time.Duration { return ttl / 20 }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{pool: pool, margin: margin, lines: map[string]*line{}, metrics: newMetrics(pool), log: log}
	switch {
	case opts.NoListen:
		log.Warn("lockmgr: no direct connection for LISTEN: a waiter wakes when the lease it waits for runs out, " +
			"not when another process releases it (give a direct connection, not a pooler, to listen on)")
	case opts.Listen != nil:
		m.listener = newListener(opts.Listen, m.released, m.listening)
	default:
		m.listener = newListener(pool.Config().ConnConfig, m.released, m.listening)
	}
	if opts.CombineGrants {
		m.grants = &combiner[grantQ, grantA]{key: func(q grantQ) string { return q.resource }, run: m.runGrants}
		m.releases = &combiner[releaseQ, releaseA]{key: func(q releaseQ) string { return q.resource }, run: m.runReleases}
	}
	return m
}

// Close stops the notification listener. Leases stay as they are.
func (m *Manager) Close() {
	if m.listener != nil {
		m.listener.close()
	}
}

// TryAcquire grants a lease on resource to holder for ttl if nobody holds a
// live one, taking over a lease that has run out or been released. It never
// waits, and it does not queue behind this Manager's Acquire calls. One round
// trip; when the lock is held it writes nothing. Errors: ErrHeld (as
// *HeldError; also when a fenced write kept the lease's row locked past
// lock_timeout), ErrInvalid, the database failures ErrBusy, ErrUnavailable,
// ErrOutcomeUnknown, and a plain "try again" error when the lease row was
// deleted under every pass of the try (Prune with a retention near zero;
// Acquire then asks again by itself).
func (m *Manager) TryAcquire(ctx context.Context, resource, holder string, ttl time.Duration) (*Lease, error) {
	return m.tryAcquire(ctx, resource, holder, "", ttl)
}

// tryAcquire is TryAcquire for owner ("": none), recorded with the grant.
func (m *Manager) tryAcquire(ctx context.Context, resource, holder, owner string, ttl time.Duration) (*Lease, error) {
	l, err := m.tryOnce(ctx, resource, holder, owner, ttl)
	if err != nil {
		m.metrics.grantErr(err, false)
		return nil, err
	}
	m.metrics.granted(time.Time{}, false)
	return l, nil
}

// tryOnce asks the database for a grant once, for TryAcquire and each pass
// of Acquire; they count the result.
func (m *Manager) tryOnce(ctx context.Context, resource, holder, owner string, ttl time.Duration) (*Lease, error) {
	if err := validate(resource, holder, owner, ttl); err != nil {
		return nil, err
	}
	start := time.Now()
	l, held, tookOver, err := m.attempt(ctx, grantQ{resource: resource, holder: holder, leaseID: newLeaseID(),
		owner: owner, ttlMS: ttl.Milliseconds()})
	switch {
	case err == nil && held != nil:
		return nil, held
	case err == nil:
		l.Owner = owner
		l.deadline = start.Add(ttl - m.margin(ttl))
		if tookOver {
			m.metrics.takeovers.Inc()
			m.log.Info("lock taken over after expiry", "resource", resource, "holder", holder, "fencing_token", l.Token)
		}
		m.log.Info("lock granted", "resource", resource, "holder", holder, "fencing_token", l.Token, "ttl", ttl)
		return l, nil
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("lockmgr: acquire %s: %w", resource, errRowVanished)
	case !pgerr.LockNotAvailable(err):
		return nil, dbError("acquire", resource, err, true)
	}
	// A fenced writer holds the lease row (CheckFence) longer than the
	// session's lock_timeout: the lease is in use; say who has it, with no
	// time left, so that Acquire tries again at once.
	rows, _ := m.pool.Query(ctx, sqlHolder, resource)
	s, err := pgx.CollectExactlyOneRow(rows, scanStatus)
	if err != nil {
		return nil, dbError("acquire", resource, err, false)
	}
	return nil, &HeldError{Resource: resource, Holder: s.Holder, ExpiresAt: s.ExpiresAt, Remaining: s.Remaining}
}

// Acquire is TryAcquire that waits until the lease is granted or ctx ends.
// Callers of one Manager wait in line, first come first served, and only the
// first of them asks the database (see queue.go). It wakes when the holder
// releases (at once for a release through this Manager, by a notification
// for any other) or, at the latest, when the current lease runs out by the
// database's clock (plus a little jitter, so waiters do not stampede), so it
// never polls on a fixed interval and never depends on a notification
// arriving. Errors: ErrInvalid, ctx.Err() (wrapping the last *HeldError's
// news), and TryAcquire's database failures.
func (m *Manager) Acquire(ctx context.Context, resource, holder string, ttl time.Duration) (*Lease, error) {
	return m.acquire(ctx, resource, holder, "", ttl)
}

// acquire is Acquire for owner ("": none). Callers of every owner wait in
// one line: the lock is the same whoever asks.
func (m *Manager) acquire(ctx context.Context, resource, holder, owner string, ttl time.Duration) (*Lease, error) {
	start := time.Now()
	l, err := m.wait(ctx, resource, holder, owner, ttl)
	if err != nil {
		m.metrics.grantErr(err, true)
		return nil, err
	}
	m.metrics.granted(start, true)
	return l, nil
}

// wait is acquire's line and loop; acquire counts its result.
func (m *Manager) wait(ctx context.Context, resource, holder, owner string, ttl time.Duration) (*Lease, error) {
	if err := validate(resource, holder, owner, ttl); err != nil {
		return nil, err
	}
	w := m.join(resource)
	m.metrics.waiters.Inc()
	defer m.metrics.waiters.Dec()
	defer m.leave(w)
	var (
		timer *time.Timer
		alarm <-chan time.Time
		last  *HeldError
	)
	sleep := func(d time.Duration) {
		if timer == nil {
			timer = time.NewTimer(d)
			alarm = timer.C
			return
		}
		timer.Reset(d)
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-w.wake:
			// Counted by whoever sent it (Manager.wake); our own turn and
			// our own "ask again" are not wake-ups.
		case <-alarm:
			m.metrics.wakeups.WithLabelValues(wakeExpiry).Inc()
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		}
		head, until := m.turn(w)
		if !head {
			continue
		}
		if until > 0 && m.ensureRegistered(ctx, w) {
			// A caller from this line holds the lease: its release here
			// wakes us; one elsewhere, a notification; else its expiry.
			sleep(until)
			continue
		}
		l, err := m.tryOnce(ctx, resource, holder, owner, ttl)
		if err == nil {
			m.granted(w, l)
			return l, nil
		}
		if errors.Is(err, errRowVanished) {
			w.signal() // nobody holds it: ask again at once
			continue
		}
		if !errors.As(err, &last) {
			return nil, err
		}
		if !m.ensureRegistered(ctx, w) {
			// Registered just now: a release may have come between our try
			// and the registration, unannounced. Ask again before sleeping.
			w.signal()
			continue
		}
		sleep(last.Remaining + jitter(last.Remaining))
	}
}

// Renew extends the caller's live lease to ttl from now, keeping its token.
// It renews only leases granted with no owner (see As). Errors: ErrLeaseLost
// (ran out, released, or never ours), ErrInvalid, and the database failures
// ErrBusy (a fenced write holds the lease's row), ErrUnavailable,
// ErrOutcomeUnknown.
func (m *Manager) Renew(ctx context.Context, resource, leaseID string, ttl time.Duration) (*Lease, error) {
	return m.renew(ctx, resource, leaseID, "", ttl)
}

// renew is Renew of a lease granted to owner ("": none).
func (m *Manager) renew(ctx context.Context, resource, leaseID, owner string, ttl time.Duration) (*Lease, error) {
	l, err := m.renewOnce(ctx, resource, leaseID, owner, ttl)
	m.metrics.renewal(err)
	return l, err
}

func (m *Manager) renewOnce(ctx context.Context, resource, leaseID, owner string, ttl time.Duration) (*Lease, error) {
	if err := validateTTL(ttl); err != nil {
		return nil, err
	}
	if !ValidLeaseID(leaseID) {
		return nil, ErrLeaseLost
	}
	start := time.Now()
	rows, _ := m.pool.Query(ctx, sqlRenew, resource, leaseID, ttl.Milliseconds(), nullable(owner))
	l, err := pgx.CollectExactlyOneRow(rows, scanLease)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrLeaseLost
	}
	if err != nil {
		return nil, dbError("renew", resource, err, true)
	}
	l.Owner = owner
	l.deadline = start.Add(ttl - m.margin(ttl))
	return &l, nil
}

// Release gives up the lease and wakes waiters. Releasing a lease that is
// still the newest grant but already ran out or was released succeeds, so
// releasing twice is harmless. It releases only leases granted with no owner
// (see As). Errors: ErrNotHolder (an older grant, or an id never issued for
// resource — a newer holder's lease is never touched), and the database
// failures ErrBusy (a fenced write holds the lease's row), ErrUnavailable,
// ErrOutcomeUnknown.
func (m *Manager) Release(ctx context.Context, resource, leaseID string) error {
	return m.release(ctx, resource, leaseID, "")
}

// release is Release of a lease granted to owner ("": none).
func (m *Manager) release(ctx context.Context, resource, leaseID, owner string) error {
	expired, err := m.releaseOnce(ctx, resource, leaseID, owner)
	m.metrics.release(expired, err)
	return err
}

// releaseOnce is release, also reporting whether the lease had already run
// out or been released (for the metrics).
func (m *Manager) releaseOnce(ctx context.Context, resource, leaseID, owner string) (expired bool, err error) {
	if !ValidLeaseID(leaseID) {
		return false, ErrNotHolder
	}
	a, err := m.releaseRow(ctx, releaseQ{resource: resource, leaseID: leaseID, owner: owner})
	token, wasLive := a.token, a.wasLive
	if errors.Is(err, pgx.ErrNoRows) {
		return false, ErrNotHolder
	}
	if err != nil {
		return false, dbError("release", resource, err, true)
	}
	// Hand on to the next caller in this Manager's line at once, without
	// waiting for our own notification (if any was sent).
	m.released(resource, token)
	m.log.Info("lock released", "resource", resource, "fencing_token", token)
	return !wasLive, nil
}

// Get describes resource's newest grant. Errors: ErrNotFound, ErrBusy,
// ErrUnavailable.
func (m *Manager) Get(ctx context.Context, resource string) (Status, error) {
	rows, _ := m.pool.Query(ctx, sqlGet, resource)
	s, err := pgx.CollectExactlyOneRow(rows, scanStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return Status{}, ErrNotFound
	}
	if err != nil {
		return Status{}, dbError("get", resource, err, false)
	}
	return s, nil
}

// List returns up to limit live leases, by resource name. Errors: ErrBusy,
// ErrUnavailable.
func (m *Manager) List(ctx context.Context, limit int) ([]Status, error) {
	rows, _ := m.pool.Query(ctx, sqlListLive, limit)
	statuses, err := pgx.CollectRows(rows, scanStatus)
	if err != nil {
		return nil, dbError("list", "", err, false)
	}
	return statuses, nil
}

// newLeaseID returns a random (version 4) UUID: the holder's secret.
func newLeaseID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// ValidLeaseID reports whether s looks like a UUID, so that garbage never
// reaches the database as a uuid parameter (where it would be an error).
func ValidLeaseID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}
