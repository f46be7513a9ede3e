// Package web is lockbank's HTTP door: the routes, their handlers, JSON
// decoding with strict validation, and one mapping from every error to an
// RFC 9457 problem+json answer with a stable code.
package web

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/lockmgr"
)

// NewServer returns the HTTP handler of bankd node: the account API over
// accounts, the lock API over locks. With keys, every /v1 request needs one
// of them (see auth.go); nil keys leave the API open. ready reports whether
// the database answers; /readyz calls it. metrics, when not nil, counts the
// requests (the caller registers it). opts add what is optional: the live
// page (WithLive).
func NewServer(logger *slog.Logger, node string, accounts *account.Service, locks *lockmgr.Manager, keys *apikey.Set, ready func(context.Context) error, metrics *Metrics, opts ...Option) http.Handler {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	logger = logger.With("node", node) // on every line of a request
	r := chi.NewRouter()
	r.Use(withRequestID(logger), logRequests(metrics), recoverPanics, allowOrigins(o.origins), recordRefusals(o.live))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, newProblem(codeNotFound, "no route for "+r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, newProblem(codeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path))
	})
	addRoutes(r, node, accounts, locks, keys, ready, o)
	return r
}
