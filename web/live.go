package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/web/live"
)

// Codes of the live page's routes.
const (
	codeLiveOff        = "live_off"
	codeTooManyStreams = "too_many_streams"
	codeBadLastEventID = "invalid_last_event_id"
)

// Option is an optional dependency of NewServer.
type Option func(*options)

type options struct {
	live    *live.Live
	origins []string
}

// WithLive serves the live page (package live) from l. origins are the
// other nodes' page origins (scheme://host:port) whose pages may drive this
// node's API from the browser (CORS): the page plays its scenarios on every
// node it is given.
func WithLive(l *live.Live, origins []string) Option {
	return func(o *options) { o.live, o.origins = l, origins }
}

// addLiveRoutes mounts the page and its data. Without a Live (or with API
// keys, since the page shows every account and its stream carries no key),
// the data routes answer 404 live_off; the page itself is always served,
// and says so.
func addLiveRoutes(r chi.Router, o options, keys bool) {
	l := o.live
	if keys {
		l = nil
	}
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { live.ServePage(w, r) })
	r.Get("/live/{file}", func(w http.ResponseWriter, r *http.Request) {
		if err := live.ServeFile(w, chi.URLParam(r, "file")); err != nil {
			writeProblem(w, newProblem(codeNotFound, "no route for "+r.URL.Path))
		}
	})
	r.Get("/live/snapshot", func(w http.ResponseWriter, r *http.Request) {
		if l == nil {
			writeProblem(w, newProblem(codeLiveOff, liveOffDetail(keys)))
			return
		}
		s, err := l.ReadSnapshot(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, s)
	})
	r.Get("/live/events", func(w http.ResponseWriter, r *http.Request) {
		if l == nil {
			writeProblem(w, newProblem(codeLiveOff, liveOffDetail(keys)))
			return
		}
		switch err := l.ServeEvents(w, r); {
		case err == nil:
		case errors.Is(err, live.ErrTooManyStreams):
			w.Header().Set("Retry-After", "5")
			writeProblem(w, newProblem(codeTooManyStreams, "this node serves as many live event streams as it allows; retry later or use another node"))
		case errors.Is(err, live.ErrBadLastEventID):
			writeProblem(w, newProblem(codeBadLastEventID, err.Error()))
		default:
			writeError(w, r, err)
		}
	})
}

func liveOffDetail(keys bool) string {
	if keys {
		return "the live page shows every account, and its event stream carries no key: it is off while API keys are on"
	}
	return "this node serves no live data (bankd --live=false)"
}

// allowOrigins lets the pages of the listed origins call this node's API
// from a browser (CORS), and answers their preflight requests. Any other
// origin gets no CORS headers, so browsers keep other sites' pages out.
func allowOrigins(origins []string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if len(origins) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" || !slices.Contains(origins, origin) {
				next.ServeHTTP(w, r)
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
				h.Set("Access-Control-Allow-Headers", "Content-Type, Fencing-Token, Idempotency-Key, Lease-Id, X-Request-Id")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// The refusals the timeline shows, and the token a fence refusal names in
// its detail (account.fenceRefusal) when the lease was the server's own.
var (
	timelineRefusals = map[string]bool{
		account.CodeInsufficientFunds: true, account.CodeStaleFencingToken: true,
		account.CodeLeaseExpired: true, account.CodeFencingTokenMismatch: true,
	}
	detailToken = regexp.MustCompile(`fencing token (\d+)`)
)

const (
	routeDeposits    = "/v1/accounts/{id}/deposits"
	routeWithdrawals = "/v1/accounts/{id}/withdrawals"
)

// recordRefusals writes each refused deposit or withdrawal to the live
// timeline: a refusal commits nothing, so no trigger sees it. It reads the
// route chi matched, the problem the handler wrote, and the request's amount
// and strategy, after the answer is written.
func recordRefusals(l *live.Live) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if l == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/accounts/") {
				next.ServeHTTP(w, r)
				return
			}
			var reqBody bytes.Buffer
			r.Body = readCloser{io.TeeReader(r.Body, &capped{&reqBody, 4 << 10}), r.Body}
			cw := &conflictWriter{ResponseWriter: w}
			next.ServeHTTP(cw, r)
			pattern := ""
			if rc := chi.RouteContext(r.Context()); rc != nil {
				pattern = rc.RoutePattern()
			}
			if cw.status != http.StatusConflict || (pattern != routeDeposits && pattern != routeWithdrawals) {
				return
			}
			var p problem
			if json.Unmarshal(cw.body.Bytes(), &p) != nil || !timelineRefusals[p.Code] {
				return
			}
			var req struct {
				Amount   int64  `json:"amount"`
				Strategy string `json:"strategy"`
			}
			_ = json.Unmarshal(reqBody.Bytes(), &req) // it was decoded strictly already; this only labels
			id, _ := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
			kind := "withdrawal"
			if pattern == routeDeposits {
				kind = "deposit"
			}
			token, _ := strconv.ParseInt(r.Header.Get("Fencing-Token"), 10, 64)
			if m := detailToken.FindStringSubmatch(p.Detail); token == 0 && m != nil {
				token, _ = strconv.ParseInt(m[1], 10, 64)
			}
			l.Refused(r.Context(), live.Refusal{Kind: kind, AccountID: id, Code: p.Code, Token: token,
				Amount: req.Amount, Strategy: req.Strategy, Detail: p.Detail})
		})
	}
}

// conflictWriter keeps the body of a 409 answer (a problem, small).
type conflictWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *conflictWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *conflictWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status == http.StatusConflict && w.body.Len() < 4<<10 {
		w.body.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *conflictWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// capped writes at most n bytes to its buffer and drops the rest, silently:
// it only labels a refusal.
type capped struct {
	buf *bytes.Buffer
	n   int
}

func (c *capped) Write(b []byte) (int, error) {
	if room := c.n - c.buf.Len(); room > 0 {
		c.buf.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
