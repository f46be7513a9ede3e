package account

import (
	"errors"
	"fmt"
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
