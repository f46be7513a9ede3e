package client_test

import (
	"context"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/bankdtest"
	"github.com/lockbank/lockbank/internal/pgtest"
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

type bundle struct {
	url  string
	api  *client.Client
	seen *seen
}

// setup serves bankd on a fresh database and returns a client of it.
func setup(t *testing.T) bundle {
	t.Helper()
	s := &seen{}
	srv := bankdtest.Start(t, s.wrap)
	return bundle{url: srv.URL, api: client.New(srv.URL), seen: s}
}
