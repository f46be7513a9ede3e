package live_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/wait"
	"github.com/lockbank/lockbank/web/live"
)

// stream is one /live/events connection, read as a client would.
type stream struct {
	resp   *http.Response
	events chan live.Event
	ended  chan struct{} // closed when the server ended the stream
}

// openStream connects to base's event stream with lastID as Last-Event-ID
// ("" for none) and reads its events in the background until t ends.
func openStream(t *testing.T, base, lastID string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/live/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET /live/events: %s %s %s", resp.Status, resp.Header.Get("Content-Type"), b)
	}
	s := &stream{resp: resp, events: make(chan live.Event, 1000), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		id := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				var e live.Event
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e); err != nil || strconv.FormatInt(e.ID, 10) != id {
					panic(fmt.Sprintf("bad event %q after id %q: %v", line, id, err))
				}
				s.events <- e
			}
		}
	}()
	return s
}

// next returns the stream's next event, failing t after 10 s.
func (s *stream) next(t *testing.T) live.Event {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-s.ended:
		t.Fatal("the stream ended")
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return live.Event{}
}

func openAccount(t *testing.T, base, owner string) {
	t.Helper()
	resp, err := http.Post(base+"/v1/accounts", "application/json", strings.NewReader(fmt.Sprintf(`{"owner":%q,"balance":100}`, owner)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("open account: %s", resp.Status)
	}
}

// TestEventsResume: a stream opened with Last-Event-ID replays exactly what
// came after it, then goes live, every id once and in order; the ids mean
// the same on every node, so a page that reconnects to another node resumes
// there without a duplicate or a gap.
func TestEventsResume(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, live.Options{Poll: 20 * time.Millisecond}, "node-a", "node-b")
	a, b := nodes[0], nodes[1]
	for i := range 5 {
		openAccount(t, a.URL, fmt.Sprintf("owner-%d", i))
	}
	s := openStream(t, a.URL, "2")
	for want := int64(3); want <= 5; want++ {
		if e := s.next(t); e.ID != want || e.Kind != "open" {
			t.Fatalf("replay: event %d %s, want %d open", e.ID, e.Kind, want)
		}
	}
	openAccount(t, b.URL, "from-b") // made through node-b, seen on node-a's stream
	openAccount(t, a.URL, "from-a")
	for want := int64(6); want <= 7; want++ {
		e := s.next(t)
		if e.ID != want {
			t.Fatalf("live: event %d, want %d", e.ID, want)
		}
		if want == 6 && (e.Node != "node-b" || *e.Detail != "from-b") {
			t.Fatalf("event 6: node %q, owner %q; want node-b's account from-b", e.Node, *e.Detail)
		}
	}
	// The page reconnects to node-b with the last id it saw.
	r := openStream(t, b.URL, "6")
	if e := r.next(t); e.ID != 7 {
		t.Fatalf("resumed on node-b after 6: event %d, want 7", e.ID)
	}
	openAccount(t, a.URL, "after")
	if e := r.next(t); e.ID != 8 {
		t.Fatalf("resumed stream, live: event %d, want 8 (no duplicate, no gap)", e.ID)
	}
	if e := s.next(t); e.ID != 8 {
		t.Fatalf("first stream: event %d, want 8", e.ID)
	}
	select {
	case e := <-r.events:
		t.Fatalf("resumed stream sent event %d twice or out of order", e.ID)
	case <-time.After(200 * time.Millisecond): // a few of the hub's polls: nothing more may come
	}

	t.Run("BadLastEventID", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/live/events", nil)
		req.Header.Set("Last-Event-ID", "-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&p)
		if resp.StatusCode != http.StatusBadRequest || p.Code != "invalid_last_event_id" {
			t.Fatalf("Last-Event-ID -1: %s %q, want 400 invalid_last_event_id", resp.Status, p.Code)
		}
	})
}

// TestEventsStreamCap: beyond MaxStreams a node answers 503
// too_many_streams with Retry-After, and takes a stream again once one ends.
func TestEventsStreamCap(t *testing.T) {
	t.Parallel()
	n := startNodes(t, live.Options{MaxStreams: 2}, "node-a")[0]
	first := openStream(t, n.URL, "")
	openStream(t, n.URL, "")
	resp, err := http.Get(n.URL + "/live/events")
	if err != nil {
		t.Fatal(err)
	}
	var p struct{ Code string }
	_ = json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || p.Code != "too_many_streams" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third stream: %s %q Retry-After %q; want 503 too_many_streams with Retry-After", resp.Status, p.Code, resp.Header.Get("Retry-After"))
	}
	first.resp.Body.Close()
	wait.Until(t, 5*time.Second, "a stream slot after one closed", func() bool {
		resp, err := http.Get(n.URL + "/live/events")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// TestShutdownEndsStreams: with Close registered on the server's shutdown,
// as bankd does, Shutdown ends open streams at once instead of waiting for
// them to go idle, which a stream never does.
func TestShutdownEndsStreams(t *testing.T) {
	t.Parallel()
	n := startNodes(t, live.Options{}, "node-a")[0]
	s1, s2 := openStream(t, n.URL, ""), openStream(t, n.URL, "")
	n.srv.Config.RegisterOnShutdown(n.live.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := n.srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %s", err, time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %s with two streams open", d)
	}
	for _, s := range []*stream{s1, s2} {
		select {
		case <-s.ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream is still open after Shutdown")
		}
	}
}
