package account

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/lockmgr"
)

// Codes name every way an account operation can be refused. They are stable:
// clients match on them, and web maps each to an HTTP status in one table.
const (
	CodeAccountNotFound       = "account_not_found"
	CodeInsufficientFunds     = "insufficient_funds"
	CodeInvalidAmount         = "invalid_amount"
	CodeInvalidRequest        = "invalid_request"
	CodeUnknownStrategy       = "unknown_strategy"
	CodeUnsafeDisabled        = "unsafe_disabled"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeInvalidIdempotencyKey = "invalid_idempotency_key"
	CodeBalanceOverflow       = "balance_overflow"
	CodeStaleFencingToken     = "stale_fencing_token"
	CodeLeaseExpired          = "lease_expired"
	CodeFencingTokenMismatch  = "fencing_token_mismatch"
	CodeLockTimeout           = "lock_timeout"
)

// Error is a refusal that the caller can act on; Code is one of the Code
// constants and Message says what was wrong in words a client can show.
// Anything else a Service method returns is an internal failure.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err when it is (or wraps) an *Error, else "".
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrOutcomeUnknown: the connection failed while COMMIT was under way (or
// while a lone statement that commits itself ran), so the change may or may
// not have been committed. A retry with the same Idempotency-Key tells
// which, and never applies it twice.
var ErrOutcomeUnknown = errors.New("the commit's outcome is unknown")

// IsUnavailable reports whether err means the database could not serve the
// request and nothing was committed: it could not be reached or took no
// more sessions (max_connections, starting up, shutting down), it refused
// the statement without running it (read-only: a standby or a demoted
// primary; cancelled: statement_timeout), or it ended our session before
// commit — a restart, pg_terminate_backend, or
// idle_in_transaction_session_timeout ending a paused node's transaction. A
// reason to answer "retry later" rather than "internal error". (A failure
// during COMMIT is ErrOutcomeUnknown instead.)
func IsUnavailable(err error) bool {
	var connErr *pgconn.ConnectError
	return errors.As(err, &connErr) || errors.Is(err, errNotCommitted)
}

// errNotCommitted marks a failure of the database that certainly left
// nothing committed: no session could be had, the server refused the
// statement without running it (read-only, cancelled, out of resources), or
// the session was lost (a restart, pg_terminate_backend, an idle timeout, a
// broken connection) before COMMIT was sent.
var errNotCommitted = errors.New("the database could not serve the request; nothing was committed")

// errLeaseRefused: the fence refused a lease batch's lease (it ran out, or a
// newer one was granted); the batch wrote nothing.
var errLeaseRefused = errors.New("the fence refused the batch's lease")

// errBalanceMoved: a writer without the lease (a row change) changed the
// balance between a lease write's read and its write — a lease batch's or a
// lease demonstration's — so the write wrote nothing; it reads again while
// the lease lasts.
var errBalanceMoved = errors.New("balance changed since it was read")

// wrap passes refusals (*Error) through untouched and labels anything else,
// turning the database's failures into what the client should hear: a lock
// wait that ran out, or conflicts that outlasted the retries, is
// CodeLockTimeout; a failure that certainly committed nothing — no session,
// a statement the server refused (read-only, cancelled), or a session lost
// outside a commit (a read, the lease's grant, the account check before a
// lease withdrawal) — is marked errNotCommitted ("unavailable, retry"). A
// commit whose outcome is unknown is ErrOutcomeUnknown already and stays so:
// callers mark it where a COMMIT (or a statement that commits itself) was in
// flight.
func wrap(op string, err error) error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, ErrOutcomeUnknown), errors.Is(err, errNotCommitted):
		return fmt.Errorf("%s: %w", op, err)
	}
	switch pgerr.Classify(err) {
	case pgerr.Busy:
		if pgerr.LockNotAvailable(err) {
			return errorf(CodeLockTimeout, "the account stayed locked longer than this node waits (lock_timeout); retry shortly")
		}
		return errorf(CodeLockTimeout, "the database kept aborting the account's transaction over conflicts with others (deadlock, serialization failure); retry shortly")
	case pgerr.Unavailable, pgerr.SessionLost:
		return fmt.Errorf("%s: %w: %w", op, errNotCommitted, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// wrapLone is wrap for one statement that commits itself: a session lost
// while it ran may have committed it.
func wrapLone(op string, err error) error {
	if sessionLost(err) {
		err = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return wrap(op, err)
}

// isRefusal reports whether err is a business outcome (*Error).
func isRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// uniqueViolation reports whether err is a unique-constraint violation: for
// us, a concurrent request with the same idempotency key won the race.
func uniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// balanceMoved reports whether err is sqlApplyBatch's guard: the balance was
// not the one the batch read, so its CASE wrote NULL.
func balanceMoved(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23502" && pgErr.ColumnName == "balance"
}

// fenceRefusal turns a lockmgr fence error into a refusal; other errors pass.
func fenceRefusal(err error, token int64) error {
	switch {
	case errors.Is(err, lockmgr.ErrStaleToken):
		return errorf(CodeStaleFencingToken, "fencing token %d is stale: a newer lease on this account has been granted", token)
	case errors.Is(err, lockmgr.ErrLeaseExpired):
		return errorf(CodeLeaseExpired, "the lease of fencing token %d is no longer live (it ran out or was released)", token)
	case errors.Is(err, lockmgr.ErrTokenMismatch):
		return errorf(CodeFencingTokenMismatch, "fencing token %d was never issued for this account", token)
	}
	return err
}
