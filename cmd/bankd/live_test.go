package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/pgtest"
)

// TestLivePageAndShutdown: bankd serves the live page at /, and a live
// event stream, which never goes idle, does not hold up shutdown: run ends
// the streams as Shutdown begins and returns nil well inside the shutdown
// timeout.
func TestLivePageAndShutdown(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "BANKD_NODE": "live"}
	b := startBankd(t, env, "--shutdown-timeout", "20s")

	resp, err := http.Get(b.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "/live/live.js") {
		t.Fatalf("GET /: %s %s, want the live page", resp.Status, resp.Header.Get("Content-Type"))
	}

	stream, err := http.Get(b.url + "/live/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("GET /live/events: %s", stream.Status)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(stream.Body)
		for sc.Scan() {
		}
	}()

	start := time.Now()
	if err := b.stop(); err != nil {
		t.Fatalf("run returned %v after %s with a live stream open\n%s", err, time.Since(start), b.logs)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %s with a live stream open", d)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the live stream is still open after bankd stopped")
	}
}

// TestLiveEventsOnlyWhenOn: a bankd with its live page on (the default)
// writes its commits to live_events; with --live=false it writes none, and
// its page's data answers 404 live_off: a node that does not show the page
// does not pay for its events.
func TestLiveEventsOnlyWhenOn(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		args       []string
		wantEvents bool
		wantStatus int
	}{
		{"On", nil, true, http.StatusOK},
		{"Off", []string{"--live=false"}, false, http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.URL(t)
			b := startBankd(t, map[string]string{"DATABASE_URL": url, "BANKD_NODE": "live-" + tt.name}, tt.args...)
			acct := createAccount(t, b.api, "alice", 100)
			if res := withdraw(b.api, acct.ID, client.Withdrawal{Amount: 10}); res.status != http.StatusCreated {
				t.Fatalf("withdrawal: %d %v", res.status, res.err)
			}
			var events int
			pool := pgtest.Pool(t, url, "test")
			if err := pool.QueryRow(context.Background(),
				`SELECT count(*) FROM live_events WHERE account_id = $1 AND kind IN ('open', 'withdrawal')`, acct.ID).Scan(&events); err != nil {
				t.Fatal(err)
			}
			if got := events == 2; got != tt.wantEvents || (!tt.wantEvents && events != 0) {
				t.Fatalf("%d live events for the account's opening and withdrawal; want them written: %v", events, tt.wantEvents)
			}
			resp, err := http.Get(b.url + "/live/snapshot")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("GET /live/snapshot: %s, want %d", resp.Status, tt.wantStatus)
			}
		})
	}
}
