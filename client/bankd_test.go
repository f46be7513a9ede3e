package client_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// seen records what reached the server: each request's method, path and
// query, and headers.
type seen struct {
	mu       sync.Mutex
	requests []*http.Request
}

func (s *seen) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Clone(context.Background()))
		s.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (s *seen) all() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.requests...)
}

// serve runs bankd's real handler, in demo mode, over a real socket on the
// migrated database of pool. It returns the server and what closes the lock
// manager.
func serve(pool *pgxpool.Pool, s *seen) (*httptest.Server, func()) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	locks := lockmgr.New(pool, lockmgr.Options{})
	accounts := account.NewService(pool, account.Options{UnsafeDemo: true, Locks: locks, Node: "node-t"})
	var h http.Handler = web.NewServer(logger, "node-t", accounts, locks, pool.Ping)
	if s != nil {
		h = s.wrap(h)
	}
	return httptest.NewServer(h), locks.Close
}

type bundle struct {
	url  string
	api  *client.Client
	seen *seen
}

// setup serves bankd on a fresh database and returns a client of it.
func setup(t *testing.T) bundle {
	t.Helper()
	s := &seen{}
	srv, closeLocks := serve(pgtest.New(t), s)
	t.Cleanup(closeLocks)
	t.Cleanup(srv.Close)
	return bundle{url: srv.URL, api: client.New(srv.URL), seen: s}
}

// exampleBankd serves bankd for the testable examples, which have no
// testing.T: on a database dropped when the tests end, for as long as the
// test binary runs.
func exampleBankd() string {
	pool, err := pgxpool.New(context.Background(), pgtest.ExampleURL())
	if err != nil {
		panic(err)
	}
	srv, _ := serve(pool, nil)
	return srv.URL
}
