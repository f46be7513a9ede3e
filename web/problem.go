package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/lockbank/lockbank/account"
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
	codeMalformedJSON:                 {http.StatusBadRequest, "Malformed JSON"},
	codeUnknownField:                  {http.StatusBadRequest, "Unknown field"},
	codeUnsupportedMediaType:          {http.StatusUnsupportedMediaType, "Unsupported media type"},
	codeBodyTooLarge:                  {http.StatusRequestEntityTooLarge, "Body too large"},
	codeNotFound:                      {http.StatusNotFound, "Not found"},
	codeMethodNotAllowed:              {http.StatusMethodNotAllowed, "Method not allowed"},
	codeDatabaseUnavailable:           {http.StatusServiceUnavailable, "Database unavailable"},
	codeInternal:                      {http.StatusInternalServerError, "Internal error"},
}

// problem is an RFC 9457 problem detail with lockbank's stable code.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
}

func newProblem(code, detail string) problem {
	pt, ok := problemTypes[code]
	if !ok {
		code, pt = codeInternal, problemTypes[codeInternal]
	}
	return problem{Type: "urn:lockbank:problem:" + code, Title: pt.title, Status: pt.status, Detail: detail, Code: code}
}

// writeError turns any error into problem+json: refusals (*account.Error)
// keep their code and message; anything else is logged with its detail and
// shown only as "internal", so SQL and stack details never leak.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var refusal *account.Error
	switch {
	case errors.As(err, &refusal):
		writeProblem(w, newProblem(refusal.Code, refusal.Message))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		loggerFrom(r.Context()).Info("request canceled by client", "err", err)
		writeProblem(w, newProblem(codeInternal, "request canceled"))
	case account.IsUnavailable(err):
		loggerFrom(r.Context()).Warn("database unavailable", "err", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, newProblem(codeDatabaseUnavailable, "the database cannot be reached; retry shortly"))
	default:
		loggerFrom(r.Context()).Error("internal error", "err", err)
		writeProblem(w, newProblem(codeInternal, "an internal error occurred; see the server log for request "+requestIDFrom(r.Context())))
	}
}

func writeProblem(w http.ResponseWriter, p problem) {
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
