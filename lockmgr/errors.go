package lockmgr

import (
	"errors"
	"fmt"
	"time"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// The error vocabulary of lockmgr. Match with errors.Is; a *HeldError (from
// errors.As) also says who holds the lock and until when.
var (
	// ErrHeld: someone else holds a live lease on the resource.
	ErrHeld = errors.New("lockmgr: lock held")
	// ErrLeaseLost: the lease ran out, was released, or was taken over; the
	// caller no longer holds the lock and must stop acting as if it did.
	ErrLeaseLost = errors.New("lockmgr: lease lost")
	// ErrNotHolder: the lease id is not the resource's newest grant.
	ErrNotHolder = errors.New("lockmgr: not the holder")
	// ErrNotFound: the resource has never been locked.
	ErrNotFound = errors.New("lockmgr: no such lock")
	// ErrInvalid: a resource, holder or TTL outside the accepted range.
	ErrInvalid = errors.New("lockmgr: invalid argument")
)

// Database failures: the call did not get its answer from the database.
// Each wraps the driver's error as well; all of them are worth trying again
// shortly.
var (
	// ErrBusy: the lease's row stayed locked longer than the session's
	// lock_timeout — a fenced write (CheckFence) holds it until its
	// transaction ends — or PostgreSQL aborted the statement over a conflict
	// with another transaction (deadlock, serialization failure). Nothing
	// changed.
	ErrBusy = errors.New("lockmgr: lease row busy")
	// ErrUnavailable: the database could not serve the call — unreachable,
	// out of connections, starting up or shutting down, read-only (a
	// standby, a demoted primary), or it cancelled the statement
	// (statement_timeout) or ended the session before anything committed.
	// Nothing changed.
	ErrUnavailable = errors.New("lockmgr: database unavailable")
	// ErrOutcomeUnknown: the session was lost while a grant, renewal or
	// release was under way, and it may or may not have committed. Renewing
	// and releasing again are safe; a grant whose answer was lost runs out
	// by its TTL.
	ErrOutcomeUnknown = errors.New("lockmgr: outcome unknown")
)

// Fence errors: a write carrying a fencing token that is not the newest live
// grant of the resource.
var (
	// ErrStaleToken: a newer lease has been granted since this token.
	ErrStaleToken = errors.New("lockmgr: stale fencing token")
	// ErrLeaseExpired: no newer grant, but this token's lease is no longer
	// live (it ran out or was released).
	ErrLeaseExpired = errors.New("lockmgr: lease expired")
	// ErrTokenMismatch: the token was never issued for this resource.
	ErrTokenMismatch = errors.New("lockmgr: fencing token not issued for this resource")
)

// errRowVanished: a grant lost its race for the lease row on every pass of
// lockmgr_try_acquire, each time to a row deleted under it (Prune with a
// retention shorter than the time between a release and the next grant) or
// to another first grant. Nobody need hold the lock: Acquire asks again.
var errRowVanished = errors.New("the lease row kept vanishing; try again")

// HeldError is ErrHeld with the current holder.
type HeldError struct {
	Resource  string
	Holder    string
	ExpiresAt time.Time
	// Remaining is how long the lease has left by the database's clock.
	Remaining time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lockmgr: %s is held by %s for another %s", e.Resource, e.Holder, e.Remaining.Round(time.Millisecond))
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// dbError describes err, the failure of a statement of op on resource, in
// the vocabulary above. commits says whether the statement commits itself
// (a grant, renewal or release): a session lost while it ran leaves its
// outcome unknown. Other errors are only labelled.
func dbError(op, resource string, err error, commits bool) error {
	where := op
	if resource != "" {
		where += " " + resource
	}
	var kind error
	switch pgerr.Classify(err) {
	case pgerr.Busy:
		kind = ErrBusy
	case pgerr.Unavailable:
		kind = ErrUnavailable
	case pgerr.SessionLost:
		kind = ErrUnavailable
		if commits {
			kind = ErrOutcomeUnknown
		}
	default:
		return fmt.Errorf("lockmgr: %s: %w", where, err)
	}
	return fmt.Errorf("%w: %s: %w", kind, where, err)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
