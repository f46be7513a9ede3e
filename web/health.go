package web

import (
	"context"
	"net/http"
	"time"
)

// handleHealthz answers while the process is up, and names the node (the
// holder name of the leases it takes).
func handleHealthz(node string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ok", "node": node})
	}
}

// handleReadyz answers 200 only while the database answers, so a load
// balancer stops sending requests to a node that cannot serve them.
func handleReadyz(ready func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			loggerFrom(r.Context()).Warn("not ready", "err", err)
			w.Header().Set("Retry-After", "1")
			writeProblem(w, newProblem(codeDatabaseUnavailable, "the database does not answer"))
			return
		}
		encode(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}
