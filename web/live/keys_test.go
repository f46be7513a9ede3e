package live_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/web"
	"github.com/lockbank/lockbank/web/live"
)

// TestLiveOffWithAPIKeys: with API keys on, the page is served but its data
// is not (it shows every account, and its stream carries no key), not even
// with a key: 404 live_off.
func TestLiveOffWithAPIKeys(t *testing.T) {
	t.Parallel()
	pool := pgtest.New(t)
	secret, line, err := apikey.New("admin", apikey.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.Parse(strings.NewReader(line))
	if err != nil {
		t.Fatal(err)
	}
	l := live.New(pool, live.Options{})
	h := web.NewServer(slog.New(slog.DiscardHandler), "node-k", nil, nil, keys, pool.Ping, nil, web.WithLive(l, nil))
	srv := httptest.NewServer(contract.Check(t)(h))
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / with keys: %s, want 200 (the page itself)", resp.Status)
	}
	for _, path := range []string{"/live/snapshot", "/live/events"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || p.Code != "live_off" {
			t.Errorf("GET %s with keys: %s %q, want 404 live_off", path, resp.Status, p.Code)
		}
	}
}
