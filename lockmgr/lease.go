package lockmgr

import (
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/text"
)

// Lease is one grant of a lock.
type Lease struct {
	Resource string `json:"resource"`
	Holder   string `json:"holder"`
	// Owner is who took the lease through Manager.As ("" through the Manager
	// itself): only the same owner, with ID, can renew or release it.
	Owner string `json:"owner,omitempty"`
	// Token is the fencing token: it names this grant, grows with every grant
	// of the resource, and stays the same across renewals. Send it with every
	// write to the protected resource.
	Token int64 `json:"token"`
	// ID is the holder's secret: only it can renew or release the lease.
	ID         string        `json:"lease_id"`
	AcquiredAt time.Time     `json:"acquired_at"`
	ExpiresAt  time.Time     `json:"expires_at"`
	TTL        time.Duration `json:"-"`

	// deadline is the holder's own conservative view: the local time the
	// request that granted or renewed the lease was sent, plus TTL, minus a
	// safety margin. Past it, the holder must assume the lease is gone.
	deadline time.Time
}

// Deadline is the local time after which the holder must stop believing it
// holds the lock: the start of the request that granted (or last renewed) the
// lease plus the TTL, less a safety margin for clock drift. The database
// judges expiry by its own clock and counts the TTL from the grant, which
// comes after any wait for the lease's row; this deadline always comes
// first, and after a long wait it may already have passed on return.
func (l *Lease) Deadline() time.Time { return l.deadline }

// Status describes a resource's newest grant without its secret lease id.
type Status struct {
	Resource  string    `json:"resource"`
	Held      bool      `json:"held"`
	Holder    string    `json:"holder"`
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// Remaining is the time left by the database's clock; 0 when not held.
	Remaining time.Duration `json:"-"`
}

// Limits on arguments.
const (
	MinTTL         = 100 * time.Millisecond
	MaxTTL         = 10 * time.Minute
	maxHolderRunes = 100
	maxOwnerRunes  = 100
)

var resourcePattern = regexp.MustCompile(`^[A-Za-z0-9:_.-]{1,200}$`)

// ValidResource reports whether name is 1–200 characters of [A-Za-z0-9:_.-].
func ValidResource(name string) bool { return resourcePattern.MatchString(name) }

func validate(resource, holder, owner string, ttl time.Duration) error {
	if !ValidResource(resource) {
		return invalid("resource must be 1 to 200 characters of A-Z a-z 0-9 : _ . -")
	}
	// The holder is shown to everyone who asks who holds a lock, and
	// PostgreSQL refuses NUL in text: it must be text (package internal/text).
	if err := text.Check(holder); err != nil {
		return invalid("holder %v: it must be text, without control, format or line-separator characters", err)
	}
	if holder == "" || utf8.RuneCountInString(holder) > maxHolderRunes {
		return invalid("holder must be 1 to 100 characters")
	}
	if utf8.RuneCountInString(owner) > maxOwnerRunes || !utf8.ValidString(owner) {
		return invalid("owner must be at most 100 characters")
	}
	return validateTTL(ttl)
}

func validateTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return invalid("ttl must be from %s to %s", MinTTL, MaxTTL)
	}
	return nil
}

func scanLease(row pgx.CollectableRow) (Lease, error) {
	var l Lease
	var ttlMS int64
	err := row.Scan(&l.Resource, &l.Holder, &l.Token, &l.ID, &l.AcquiredAt, &l.ExpiresAt, &ttlMS)
	l.TTL = time.Duration(ttlMS) * time.Millisecond
	return l, err
}

func scanStatus(row pgx.CollectableRow) (Status, error) {
	var (
		l   Lease
		ttl int64
		now time.Time
	)
	if err := row.Scan(&l.Resource, &l.Holder, &l.Token, &l.ID, &l.AcquiredAt, &l.ExpiresAt, &ttl, &now); err != nil {
		return Status{}, err
	}
	s := Status{Resource: l.Resource, Holder: l.Holder, Token: l.Token, ExpiresAt: l.ExpiresAt}
	if l.ExpiresAt.After(now) {
		s.Held, s.Remaining = true, l.ExpiresAt.Sub(now)
	}
	return s, nil
}

// collectAttempt reads the one row of sqlTryAcquire: a lease when granted,
// else a *HeldError naming the holder; and whether the grant took over a
// lease that had run out.
func collectAttempt(rows pgx.Rows) (*Lease, *HeldError, bool, error) {
	a, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (attempt, error) {
		var a attempt
		err := row.Scan(a.dest()...)
		return a, err
	})
	if err != nil {
		return nil, nil, false, err
	}
	l, held, tookOver := a.result()
	return l, held, tookOver, nil
}

// forEachAttempt reads the rows of sqlTryAcquireMany: each one's ordinality
// into *ord, then the attempt as collectAttempt reads it, for fn.
func forEachAttempt(rows pgx.Rows, ord *int64, fn func(*Lease, *HeldError, bool) error) error {
	var a attempt
	_, err := pgx.ForEachRow(rows, append([]any{ord}, a.dest()...), func() error {
		b := a // a fresh lease per row
		return fn(b.result())
	})
	return err
}

// attempt is one row of sqlTryAcquire.
type attempt struct {
	granted bool
	ranOut  bool
	lease   Lease
	leaseID *string // NULL when held: the holder's secret stays with it
	now     time.Time
	ttlMS   int64
}

func (a *attempt) dest() []any {
	l := &a.lease
	return []any{&a.granted, &l.Resource, &l.Holder, &l.Token, &a.leaseID, &l.AcquiredAt, &l.ExpiresAt, &a.ttlMS, &a.now, &a.ranOut}
}

func (a *attempt) result() (*Lease, *HeldError, bool) {
	a.lease.TTL = time.Duration(a.ttlMS) * time.Millisecond
	if !a.granted {
		// Held when we asked, even if released since: Remaining 0 then, so
		// that Acquire asks again at once.
		return nil, &HeldError{Resource: a.lease.Resource, Holder: a.lease.Holder, ExpiresAt: a.lease.ExpiresAt,
			Remaining: max(0, a.lease.ExpiresAt.Sub(a.now))}, false
	}
	if a.leaseID != nil {
		a.lease.ID = *a.leaseID
	}
	return &a.lease, nil, a.ranOut
}
