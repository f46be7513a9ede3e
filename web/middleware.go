package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

type ctxKey int

const (
	loggerKey ctxKey = iota
	requestIDKey
	apiKeyKey
	noteKey
)

// requestNote carries what the handlers learn about a request out to its
// log line (logRequests runs outside them): the name of the API key it was
// authenticated with (only the name: never the key), the strategy and
// Fencing-Token of a change, the size of the batch it was applied in, and
// the problem code it was answered with. Never a lease id.
type requestNote struct {
	apiKey       string
	strategy     string
	fencingToken int64
	batchSize    int
	problemCode  string
}

func noteFrom(ctx context.Context) *requestNote {
	if n, ok := ctx.Value(noteKey).(*requestNote); ok {
		return n
	}
	return &requestNote{} // outside NewServer's middleware (tests of one handler): noted, never read
}

// withRequestID gives every request an id — the client's X-Request-Id when it
// is short and printable, else a new one — echoes it in the response, and
// puts a logger carrying it into the context, so every log line of the
// request can be found by it.
func withRequestID(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-Id")
			if !printable(id, 64) {
				id = newRequestID()
			}
			w.Header().Set("X-Request-Id", id)
			ctx := context.WithValue(r.Context(), requestIDKey, id)
			ctx = context.WithValue(ctx, loggerKey, logger.With("request_id", id))
			ctx = context.WithValue(ctx, noteKey, &requestNote{})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// logRequests logs one line per request when it ends — its route pattern
// (the path too: the request id's line must say which account or lock), its
// status and duration, and what the handlers noted — and counts it in
// metrics (nil: not counted) by route pattern, never by path.
func logRequests(metrics *Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			metrics.begin()
			defer metrics.end()
			n := noteFrom(r.Context())
			ww := middleware.NewWrapResponseWriter(&notingWriter{ResponseWriter: w, note: n}, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			took := time.Since(start)
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			route := routePattern(r)
			metrics.observe(route, r.Method, status, took)
			attrs := []any{"method", r.Method, "route", route, "path", r.URL.Path, "status", status,
				"bytes", ww.BytesWritten(), "duration_ms", float64(took.Microseconds()) / 1000}
			if n.apiKey != "" {
				attrs = append(attrs, "api_key", n.apiKey)
			}
			if n.strategy != "" {
				attrs = append(attrs, "strategy", n.strategy)
			}
			if n.fencingToken != 0 {
				attrs = append(attrs, "fencing_token", n.fencingToken)
			}
			if n.batchSize != 0 {
				attrs = append(attrs, "batch_size", n.batchSize)
			}
			if n.problemCode != "" {
				attrs = append(attrs, "problem", n.problemCode)
			}
			loggerFrom(r.Context()).Log(r.Context(), logLevelFor(status), "request", attrs...)
		})
	}
}

// routePattern is the chi pattern that matched r ("/v1/accounts/{id}"), or
// "unmatched": a label value from the route table, never from the client.
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" {
			return p
		}
	}
	return "unmatched"
}

// recoverPanics turns a panicking handler into a logged 500 problem instead
// of a dropped connection.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				loggerFrom(r.Context()).Error("panic", "value", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeProblem(w, newProblem(codeInternal, "an internal error occurred; see the server log for request "+requestIDFrom(r.Context())))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// printable reports whether s is 1–max printable ASCII characters.
func printable(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// notingWriter lets writeProblem, which sees only the ResponseWriter, note
// the problem code for the request's log line.
type notingWriter struct {
	http.ResponseWriter
	note *requestNote
}

func (w *notingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// noteProblem records code on w's request note, if w (or a writer it wraps)
// carries one.
func noteProblem(w http.ResponseWriter, code string) {
	for {
		switch ww := w.(type) {
		case *notingWriter:
			ww.note.problemCode = code
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = ww.Unwrap()
		default:
			return
		}
	}
}
