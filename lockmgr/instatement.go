package lockmgr

import "time"

// A lease for one statement: for a holder whose whole critical section is
// one SQL statement on the same database, the grant and the release can be
// a call inside that statement (SQL function lockmgr_grant_released,
// migration 00009):
//
//	lockmgr_grant_released(resource, holder, ttl_ms, owner) → token, or NULL
//
// It takes over a lease that ran out or was released (or makes the first
// grant), draws the token as every grant does, records the grant, and
// leaves the row released — but locked by the caller's transaction until it
// ends, so no other grant can be made, and no other holder's fence pass,
// before the caller's writes under the token commit. NULL: a live lease
// holds the resource, and nothing was granted; the caller then takes a path
// that waits for it (Acquire, or QueueGrant and its HeldError).
//
// The caller's transaction must commit synchronously (the function sees to
// it), and a grant it rolls back is undone with it. Compared with
// QueueGrant, QueueFence and QueueRelease in one pipeline, it is one call
// and one update of the lease row instead of three statements and two
// updates.

// StatementGrant is a lease for one statement, before the caller runs it.
type StatementGrant struct {
	m        *Manager
	resource string
	holder   string
	ttl      time.Duration
}

// GrantInStatement checks a lease for one statement of resource for holder
// and returns it; the caller writes the call
// lockmgr_grant_released($a, $b, $c, $d) into its statement, with Args as
// its four arguments. ttl is what the grant records; the lease ends with
// the caller's transaction.
func (m *Manager) GrantInStatement(resource, holder string, ttl time.Duration) (*StatementGrant, error) {
	if err := validate(resource, holder, "", ttl); err != nil {
		return nil, err
	}
	return &StatementGrant{m: m, resource: resource, holder: holder, ttl: ttl}, nil
}

// Args are the four arguments of lockmgr_grant_released, in order.
func (g *StatementGrant) Args() []any {
	return []any{g.resource, g.holder, g.ttl.Milliseconds(), nil}
}

// Committed counts the grant and its release, and hands the resource on to
// the next caller in this Manager's line: call it once the caller's
// statement committed with the token it returned.
func (g *StatementGrant) Committed(token int64) {
	g.m.metrics.granted(time.Time{}, false)
	g.m.metrics.release(false, nil)
	g.m.released(g.resource, token)
}
