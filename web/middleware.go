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

	"github.com/go-chi/chi/v5/middleware"
)

type ctxKey int

const (
	loggerKey ctxKey = iota
	requestIDKey
	apiKeyKey
	keySlotKey
)

// keySlot carries the name of the API key a request was authenticated with
// out of authenticate, which runs inside logRequests, so that the request's
// log line can name it. Only the name: never the key.
type keySlot struct{ name string }

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
			ctx = context.WithValue(ctx, keySlotKey, &keySlot{})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// logRequests logs one line per request when it ends, with the name of its
// API key when it had a good one.
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status,
			"bytes", ww.BytesWritten(), "duration_ms", float64(time.Since(start).Microseconds()) / 1000}
		if slot, _ := r.Context().Value(keySlotKey).(*keySlot); slot != nil && slot.name != "" {
			attrs = append(attrs, "api_key", slot.name)
		}
		loggerFrom(r.Context()).Log(r.Context(), logLevelFor(status), "request", attrs...)
	})
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
