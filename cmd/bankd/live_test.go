package main

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

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
