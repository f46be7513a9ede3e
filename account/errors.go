package account

import (
	"errors"
	"fmt"

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

// Database failures. Besides its refusals, every Service method may fail
// because of the database, and says how: CodeLockTimeout (an *Error: a lock
// wait ran out, or conflicts with other transactions outlasted the
// retries), an error for which IsUnavailable is true (the database could
// not serve the request; nothing was committed), or, for a change only,
// ErrOutcomeUnknown (it may or may not have committed). Anything else is a
// bug.

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
