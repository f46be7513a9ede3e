// Package pgerr sorts the failures of a PostgreSQL call by what they mean to
// the caller's caller: try again shortly, or a bug. It holds the one list of
// SQLSTATEs that account and lockmgr share; each of them turns a Class into
// its own error vocabulary, and only it knows whether the failed call may
// have committed (a lone statement commits itself; a statement inside a
// transaction whose COMMIT was never sent does not).
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Class is what a failed call means to whoever asked for it.
type Class int

const (
	// Other is no failure of the database's: a refusal the caller decides
	// on (a constraint, a row not found), or a bug.
	Other Class = iota
	// Busy: the statement gave up waiting for a lock (55P03
	// lock_not_available, after lock_timeout), or PostgreSQL aborted it over
	// a conflict with another transaction (40001 serialization_failure,
	// 40P01 deadlock_detected). It failed, the session lives on, and trying
	// again later may succeed.
	Busy
	// Unavailable: the database cannot serve the call now, and the call
	// certainly changed nothing — no session could be had (connection
	// refused, 53300 too_many_connections, 57P03 cannot_connect_now: starting
	// up or shutting down, …), nothing was sent, or the server refused the
	// statement without ending the session: 25006 read_only_sql_transaction
	// (a standby, a demoted primary), 57014 query_canceled
	// (statement_timeout, pg_cancel_backend), class 53 (out of memory, disk
	// full).
	Unavailable
	// SessionLost: the session ended while the call was under way — a FATAL
	// or PANIC from the server (57P01 admin_shutdown from
	// pg_terminate_backend or a shutdown, 57P02 crash_shutdown, 25P03
	// idle_in_transaction_session_timeout, …), a broken connection, or a
	// context that ended mid-call (pgx then closes the connection). Nothing
	// was committed unless a COMMIT (or a lone statement, which commits
	// itself) was in flight: then the outcome is unknown.
	SessionLost
)

// Classify tells what err, returned by a pgx call, means.
func Classify(err error) Class {
	if err == nil {
		return Other
	}
	// pgconn says "conn closed" (pgconn.ErrConnClosed, marked safe to
	// retry) both when a call finds the connection closed before sending
	// anything and when it was closed after the statement was sent, while
	// the answer was awaited: a COMMIT in flight when the primary died was
	// seen to commit (and survive the failover) and fail so. So it is a lost
	// session, whose callers know whether a commit was in flight.
	if errors.Is(err, pgconn.ErrConnClosed) {
		return SessionLost
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.SafeToRetry(err) {
		return Unavailable // no session, or nothing sent on it
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Severity == "FATAL" || pgErr.Severity == "PANIC" ||
			pgErr.SeverityUnlocalized == "FATAL" || pgErr.SeverityUnlocalized == "PANIC":
			return SessionLost
		case pgErr.Code == "55P03", pgErr.Code == "40001", pgErr.Code == "40P01":
			return Busy
		case pgErr.Code == "25006", pgErr.Code == "57014", pgErr.Code == "57P03", strings.HasPrefix(pgErr.Code, "53"):
			return Unavailable
		case pgErr.Code == "25P03", strings.HasPrefix(pgErr.Code, "57"), strings.HasPrefix(pgErr.Code, "08"):
			// Session-ending codes, should a server send them without FATAL.
			return SessionLost
		}
		return Other
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, pgconn.ErrConnClosed) || pgconn.Timeout(err) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return SessionLost
	}
	return Other
}

// LockNotAvailable reports whether err is PostgreSQL giving up waiting for a
// lock (55P03, lock_timeout): the row is held by someone who may be paused.
func LockNotAvailable(err error) bool { return code(err) == "55P03" }

// Conflict reports whether PostgreSQL aborted the transaction only because
// of another one (40001 serialization_failure, 40P01 deadlock_detected), so
// that running it again is safe.
func Conflict(err error) bool {
	c := code(err)
	return c == "40001" || c == "40P01"
}

func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
