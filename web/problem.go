package web

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/lockmgr"
)

// Codes that only the HTTP layer produces; the domain's codes live in account.
const (
	codeMalformedJSON        = "malformed_json"
	codeUnknownField         = "unknown_field"
	codeUnsupportedMediaType = "unsupported_media_type"
	codeBodyTooLarge         = "body_too_large"
	codeNotFound             = "not_found"
	codeMethodNotAllowed     = "method_not_allowed"
	codeDatabaseUnavailable  = "database_unavailable"
	codeInternal             = "internal"
	codeOutcomeUnknown       = "outcome_unknown"
	codeInvalidFencingToken  = "invalid_fencing_token"
	codeInvalidLeaseID       = "invalid_lease_id"
	codeLockHeld             = "lock_held"
	codeLeaseLost            = "lease_lost"
	codeNotHolder            = "not_holder"
	codeLockNotFound         = "lock_not_found"
	codeUnauthenticated      = "unauthenticated"
)

// problemTypes is the one table from error code to HTTP status and title.
// Codes are part of the API: clients match on them, so they never change.
var problemTypes = map[string]struct {
	status int
	title  string
}{
	account.CodeAccountNotFound:       {http.StatusNotFound, "Account not found"},
	account.CodeInsufficientFunds:     {http.StatusConflict, "Insufficient funds"},
	account.CodeInvalidAmount:         {http.StatusUnprocessableEntity, "Invalid amount"},
	account.CodeInvalidRequest:        {http.StatusUnprocessableEntity, "Invalid request"},
	account.CodeUnknownStrategy:       {http.StatusUnprocessableEntity, "Unknown strategy"},
	account.CodeUnsafeDisabled:        {http.StatusForbidden, "Demo mode is off"},
	account.CodeIdempotencyKeyReused:  {http.StatusUnprocessableEntity, "Idempotency key reused"},
	account.CodeInvalidIdempotencyKey: {http.StatusBadRequest, "Invalid idempotency key"},
	account.CodeBalanceOverflow:       {http.StatusUnprocessableEntity, "Balance would overflow"},
	account.CodeStaleFencingToken:     {http.StatusConflict, "Stale fencing token"},
	account.CodeLeaseExpired:          {http.StatusConflict, "Lease expired"},
	account.CodeFencingTokenMismatch:  {http.StatusConflict, "Fencing token not issued for this account"},
	account.CodeLockTimeout:           {http.StatusServiceUnavailable, "Lock wait timed out"},
	codeInvalidFencingToken:           {http.StatusBadRequest, "Invalid fencing token"},
	codeInvalidLeaseID:                {http.StatusBadRequest, "Invalid lease id"},
	codeLockHeld:                      {http.StatusConflict, "Lock held"},
	codeLeaseLost:                     {http.StatusConflict, "Lease lost"},
	codeNotHolder:                     {http.StatusConflict, "Not the holder"},
	codeLockNotFound:                  {http.StatusNotFound, "Lock not found"},
	codeUnauthenticated:               {http.StatusUnauthorized, "Unauthenticated"},
	codeMalformedJSON:                 {http.StatusBadRequest, "Malformed JSON"},
	codeUnknownField:                  {http.StatusBadRequest, "Unknown field"},
	codeUnsupportedMediaType:          {http.StatusUnsupportedMediaType, "Unsupported media type"},
	codeBodyTooLarge:                  {http.StatusRequestEntityTooLarge, "Body too large"},
	codeNotFound:                      {http.StatusNotFound, "Not found"},
	codeMethodNotAllowed:              {http.StatusMethodNotAllowed, "Method not allowed"},
	codeDatabaseUnavailable:           {http.StatusServiceUnavailable, "Database unavailable"},
	codeInternal:                      {http.StatusInternalServerError, "Internal error"},
	codeOutcomeUnknown:                {http.StatusServiceUnavailable, "Outcome unknown"},
	codeLiveOff:                       {http.StatusNotFound, "Live page off"},
	codeTooManyStreams:                {http.StatusServiceUnavailable, "Too many event streams"},
	codeBadLastEventID:                {http.StatusBadRequest, "Invalid Last-Event-ID"},
}

// problem is an RFC 9457 problem detail with lockbank's stable code.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// For lock_held: who holds the lock, and until when.
	Holder    string     `json:"holder,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func newProblem(code, detail string) problem {
	pt, ok := problemTypes[code]
	if !ok {
		code, pt = codeInternal, problemTypes[codeInternal]
	}
	return problem{Type: "urn:lockbank:problem:" + code, Title: pt.title, Status: pt.status, Detail: detail, Code: code}
}

// writeError turns any error into problem+json: refusals (*account.Error)
// keep their code and message; the database's failures become 503s that say
// whether anything may have changed; anything else is logged with its
// detail and shown only as "internal", so SQL and stack details never leak.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		refusal *account.Error
		held    *lockmgr.HeldError
	)
	log := loggerFrom(r.Context())
	switch {
	case errors.As(err, &refusal):
		writeProblem(w, newProblem(refusal.Code, refusal.Message))
	case errors.As(err, &held):
		p := newProblem(codeLockHeld, held.Error())
		p.Holder, p.ExpiresAt = held.Holder, &held.ExpiresAt
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(held.Remaining.Seconds()))))
		writeProblem(w, p)
	case lockCode(err) != "":
		writeProblem(w, newProblem(lockCode(err), strings.TrimPrefix(err.Error(), "lockmgr: ")))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		log.Info("request canceled by client", "err", err)
		writeProblem(w, newProblem(codeInternal, "request canceled"))
	case errors.Is(err, account.ErrOutcomeUnknown):
		log.Warn("commit outcome unknown", "err", err)
		writeProblem(w, newProblem(codeOutcomeUnknown, "the connection to the database failed during the commit: the change may or may not have been made; retry with the same Idempotency-Key to find out (it is never applied twice)"))
	// An account error may wrap a lockmgr one (a lease withdrawal's grant):
	// the account's verdict on its change comes first.
	case account.IsUnavailable(err):
		writeUnavailable(w, r, err)
	case errors.Is(err, lockmgr.ErrOutcomeUnknown):
		log.Warn("lock call outcome unknown", "err", err)
		writeProblem(w, newProblem(codeOutcomeUnknown, "the connection to the database failed while the call ran: it may or may not have taken effect; renewing and releasing again are safe, and a grant whose answer was lost runs out by its TTL"))
	case errors.Is(err, lockmgr.ErrBusy):
		log.Warn("lease row busy", "err", err)
		writeProblem(w, newProblem(account.CodeLockTimeout, "the lock's row stayed locked by a fenced write longer than this node waits (lock_timeout); nothing was changed; retry shortly"))
	case errors.Is(err, lockmgr.ErrUnavailable):
		writeUnavailable(w, r, err)
	default:
		log.Error("internal error", "err", err)
		writeProblem(w, newProblem(codeInternal, "an internal error occurred; see the server log for request "+requestIDFrom(r.Context())))
	}
}

func writeUnavailable(w http.ResponseWriter, r *http.Request, err error) {
	loggerFrom(r.Context()).Warn("database unavailable", "err", err)
	writeProblem(w, newProblem(codeDatabaseUnavailable, "the database cannot serve this request now (unreachable, out of connections, read-only, shutting down, or too slow); nothing was changed; retry shortly"))
}

// lockCode maps lockmgr's error vocabulary to problem codes.
func lockCode(err error) string {
	switch {
	case errors.Is(err, lockmgr.ErrLeaseLost):
		return codeLeaseLost
	case errors.Is(err, lockmgr.ErrNotHolder):
		return codeNotHolder
	case errors.Is(err, lockmgr.ErrNotFound):
		return codeLockNotFound
	case errors.Is(err, lockmgr.ErrInvalid):
		return account.CodeInvalidRequest
	}
	return ""
}

// writeProblem writes p. Every 503 means "try again": it says when.
func writeProblem(w http.ResponseWriter, p problem) {
	noteProblem(w, p.Code)
	if p.Status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = jsonEncode(w, p)
}

func logLevelFor(status int) slog.Level {
	if status >= 500 {
		return slog.LevelError
	}
	return slog.LevelInfo
}
