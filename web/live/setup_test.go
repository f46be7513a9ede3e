package live_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/web"
	"github.com/lockbank/lockbank/web/live"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// node is one bankd serving its real handler (web.NewServer with the live
// page) over a real socket, on its own pool of a shared database.
type node struct {
	name string
	srv  *httptest.Server
	URL  string
	pool *pgxpool.Pool
	live *live.Live
}

// testLeaseTTL is the nodes' lease TTL: four times the race's hold (500 ms
// between a demo withdrawal's read and its write), so that a holder slowed
// down by a loaded machine still writes inside its lease — at 1 s, once, in
// CI, lease-nofence's holder did not, the other node took over, and the race
// showed a double spend that was no race.
const testLeaseTTL = 2 * time.Second

// startNodes serves bankd nodes (demo mode, 1 s leases) on one fresh
// database until t ends, each allowing the others' pages to drive it
// (CORS). Every request and response is checked against the OpenAPI
// document. opts tunes every node's Live.
func startNodes(t *testing.T, opts live.Options, names ...string) []*node {
	t.Helper()
	url := pgtest.URL(t)
	nodes := make([]*node, len(names))
	handlers := make([]http.Handler, len(names))
	for i, name := range names {
		i := i
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handlers[i].ServeHTTP(w, r) }))
		srv.Start()
		t.Cleanup(srv.Close)
		nodes[i] = &node{name: name, srv: srv, URL: srv.URL}
	}
	for i, n := range nodes {
		pool := pgtest.Configured(t, url, func(cfg *pgxpool.Config) {
			cfg.ConnConfig.RuntimeParams["application_name"] = "bankd " + n.name // as bankd names its sessions
			live.WriteEvents(cfg.ConnConfig)
		})
		locks := lockmgr.New(pool, lockmgr.Options{})
		t.Cleanup(locks.Close)
		accounts := account.NewService(pool, account.Options{UnsafeDemo: true, Locks: locks, Node: n.name,
			LeaseTTL: testLeaseTTL, LeaseWait: 5 * time.Second})
		o := opts
		o.UnsafeDemo, o.LeaseTTL = true, testLeaseTTL
		l := live.New(pool, o)
		if err := l.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		var origins []string
		for _, other := range nodes {
			if other != n {
				origins = append(origins, other.URL)
			}
		}
		logger := slog.New(slog.DiscardHandler)
		handlers[i] = contract.Check(t)(web.NewServer(logger, n.name, accounts, locks, nil, pool.Ping, nil, web.WithLive(l, origins)))
		n.pool, n.live = pool, l
	}
	return nodes
}
