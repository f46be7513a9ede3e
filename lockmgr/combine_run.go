package lockmgr

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A grant request and its answer as sqlTryAcquire gives them (collectAttempt).
type grantQ struct {
	resource, holder, leaseID, owner string
	ttlMS                            int64
}

type grantA struct {
	lease    *Lease
	held     *HeldError
	tookOver bool
}

// attempt asks for one grant: alone, or with the other grants in flight when
// the Manager combines them.
func (m *Manager) attempt(ctx context.Context, q grantQ) (*Lease, *HeldError, bool, error) {
	if m.grants == nil {
		return m.attemptAlone(ctx, q)
	}
	a, err := m.grants.do(ctx, q)
	return a.lease, a.held, a.tookOver, err
}

// attemptAlone is one grant statement. A grant whose token another grant
// recorded first (lease_grants' key: only after the sequence went back, when
// two grants drew the same value before either committed; see
// lockmgr_next_token) changed nothing, and is asked again: it draws anew,
// above the other's now committed token.
func (m *Manager) attemptAlone(ctx context.Context, q grantQ) (l *Lease, held *HeldError, tookOver bool, err error) {
	for range 3 {
		rows, _ := m.pool.Query(ctx, sqlTryAcquire, q.resource, q.holder, q.leaseID, q.ttlMS, nullable(q.owner))
		l, held, tookOver, err = collectAttempt(rows)
		if !tokenTaken(err) {
			break
		}
	}
	return l, held, tookOver, err
}

// tokenTaken reports whether err is lease_grants refusing a token recorded
// already.
func tokenTaken(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "lease_grants_pkey"
}

// runGrants is the grant combiner's statement: one for a lone request, the
// combined one for more, and should that fail, each alone, so that one bad
// request (a lock_timeout on its row, say) cannot fail the others.
func (m *Manager) runGrants(ctx context.Context, batch []*call[grantQ, grantA]) {
	alone := func(c *call[grantQ, grantA]) {
		c.a.lease, c.a.held, c.a.tookOver, c.err = m.attemptAlone(c.ctx, c.q)
	}
	if len(batch) == 1 {
		alone(batch[0])
		return
	}
	n := len(batch)
	res, holders, ids, ttls, owners := make([]string, n), make([]string, n), make([]string, n), make([]int64, n), make([]*string, n)
	for i, c := range batch {
		res[i], holders[i], ids[i], ttls[i], owners[i] = c.q.resource, c.q.holder, c.q.leaseID, c.q.ttlMS, nullableText(c.q.owner)
	}
	rows, _ := m.pool.Query(ctx, sqlTryAcquireMany, res, holders, ids, ttls, owners)
	answered := make([]bool, n)
	var ord int64
	err := forEachAttempt(rows, &ord, func(l *Lease, held *HeldError, tookOver bool) error {
		i := int(ord) - 1
		if i < 0 || i >= n || answered[i] {
			return errors.New("lockmgr: combined grant: unexpected row")
		}
		answered[i] = true
		batch[i].a = grantA{lease: l, held: held, tookOver: tookOver}
		return nil
	})
	if err != nil {
		for _, c := range batch {
			alone(c)
		}
		return
	}
	for i, c := range batch {
		if !answered[i] {
			c.a, c.err = grantA{}, pgx.ErrNoRows // as collectAttempt says it: the row vanished
		}
	}
}

// A release request and its answer (sqlRelease's row).
type releaseQ struct{ resource, leaseID, owner string }

type releaseA struct {
	token             int64
	wasLive, notified bool
}

func (m *Manager) releaseRow(ctx context.Context, q releaseQ) (releaseA, error) {
	if m.releases == nil {
		return m.releaseAlone(ctx, q)
	}
	return m.releases.do(ctx, q)
}

func (m *Manager) releaseAlone(ctx context.Context, q releaseQ) (a releaseA, err error) {
	var lazy bool
	err = m.pool.QueryRow(ctx, sqlRelease, q.resource, q.leaseID, nullable(q.owner)).Scan(&a.token, &a.wasLive, &a.notified, &lazy)
	return a, err
}

// runReleases is the release combiner's statement, like runGrants.
func (m *Manager) runReleases(ctx context.Context, batch []*call[releaseQ, releaseA]) {
	alone := func(c *call[releaseQ, releaseA]) { c.a, c.err = m.releaseAlone(c.ctx, c.q) }
	if len(batch) == 1 {
		alone(batch[0])
		return
	}
	n := len(batch)
	res, ids, owners := make([]string, n), make([]string, n), make([]*string, n)
	byResource := make(map[string]*call[releaseQ, releaseA], n)
	for i, c := range batch {
		res[i], ids[i], owners[i] = c.q.resource, c.q.leaseID, nullableText(c.q.owner)
		byResource[c.q.resource] = c
		c.err = pgx.ErrNoRows // unless a row says otherwise: not the holder
	}
	rows, _ := m.pool.Query(ctx, sqlReleaseMany, res, ids, owners)
	var (
		resource string
		a        releaseA
		lazy     bool
	)
	_, err := pgx.ForEachRow(rows, []any{&resource, &a.token, &a.wasLive, &a.notified, &lazy}, func() error {
		c := byResource[resource]
		if c == nil {
			return errors.New("lockmgr: combined release: unexpected row")
		}
		c.a, c.err = a, nil
		return nil
	})
	if err != nil {
		for _, c := range batch {
			alone(c)
		}
	}
}

// nullableText is nullable for a text[] element.
func nullableText(owner string) *string {
	if owner == "" {
		return nil
	}
	return &owner
}
