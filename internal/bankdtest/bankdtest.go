// Package bankdtest serves bankd's real HTTP handler (web.NewServer) over a
// real socket on a fresh migrated database (internal/pgtest): for the tests
// of what talks to bankd over HTTP — the client, the bank test — without
// starting a process. The server runs in demo mode as node "node-t", with a
// lock manager for the lease strategies and the lock API.
//
// A package that uses it calls pgtest.Main from TestMain.
package bankdtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
)

// Node is the name the server gives itself (/healthz, lease holder).
const Node = "node-t"

// Server is a bankd handler being served.
type Server struct {
	URL  string
	Pool *pgxpool.Pool // its database
}

// Start serves bankd on a fresh database until t ends. wrap, if not nil,
// wraps the handler: to watch what reaches it. Every request and response
// is checked against the OpenAPI document (internal/contract); a mismatch
// fails t.
func Start(t testing.TB, wrap func(http.Handler) http.Handler) Server {
	t.Helper()
	pool := pgtest.New(t)
	srv, closeLocks := serve(pool, contract.Check(t), wrap)
	t.Cleanup(closeLocks)
	t.Cleanup(srv.Close)
	return Server{URL: srv.URL, Pool: pool}
}

// StartExample serves bankd for testable examples, which have no
// testing.TB, and returns its URL: on a database dropped when pgtest.Main
// ends, for as long as the test binary runs. A failure panics.
func StartExample() string {
	pool, err := pgxpool.New(context.Background(), pgtest.ExampleURL())
	if err != nil {
		panic(err)
	}
	srv, _ := serve(pool, contract.Check(panicReporter{}), nil)
	return srv.URL
}

// panicReporter fails an example, which has no testing.TB, on a contract
// mismatch: the panic aborts the response, so the example's output differs.
type panicReporter struct{}

func (panicReporter) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

func serve(pool *pgxpool.Pool, check, wrap func(http.Handler) http.Handler) (*httptest.Server, func()) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	locks := lockmgr.New(pool, lockmgr.Options{})
	accounts := account.NewService(pool, account.Options{UnsafeDemo: true, Locks: locks, Node: Node})
	h := check(web.NewServer(logger, Node, accounts, locks, nil, pool.Ping, nil)) // no API keys
	if wrap != nil {
		h = wrap(h)
	}
	return httptest.NewServer(h), locks.Close
}
