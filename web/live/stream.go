package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Bounds of one stream.
const (
	// A page that opens the stream with no Last-Event-ID sees this many of
	// the latest events first, so that its timeline does not start empty.
	recentOnOpen = 50
	// At most this many events are replayed after a Last-Event-ID; a page
	// that was away longer starts from the newest ones.
	maxReplay = 1000
	// A write that the client does not take within this time ends the
	// stream: a reader that stopped reading is dropped, not waited for.
	writeWait = 5 * time.Second
	// A comment line this often keeps proxies from closing an idle stream
	// and tells a gone client sooner.
	heartbeat = 15 * time.Second
)

// ErrBadLastEventID: Last-Event-ID (or ?after=) is not an event id.
var ErrBadLastEventID = errors.New("Last-Event-ID must be a non-negative integer")

// ServeEvents streams the timeline as Server-Sent Events: first what came
// after the client's Last-Event-ID (header, or ?after= for a first
// connection), read from the table, then each new event as the hub reads
// it, in id order, each at most once. It returns ErrTooManyStreams,
// ErrBadLastEventID, or a database error, before anything is written; once
// streaming, it ends when the client goes, falls behind, or Close is called.
func (l *Live) ServeEvents(w http.ResponseWriter, r *http.Request) error {
	after := int64(-1) // none: the latest few
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("after")
	}
	if last != "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return ErrBadLastEventID
		}
		after = n
	}
	sub, upTo, err := l.subscribe()
	if err != nil {
		return err
	}
	defer l.unsubscribe(sub)

	ctx := r.Context()
	var replay []Event
	if after < 0 {
		after = max(upTo-recentOnOpen, 0)
	}
	if upTo-after > maxReplay {
		after = upTo - maxReplay
	}
	if upTo > after {
		if replay, err = l.read(ctx, after, upTo, maxReplay); err != nil {
			return err
		}
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sent := after
	send := func(e Event) error {
		if e.ID <= sent {
			return nil // replayed already
		}
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		sent = e.ID
		return write(w, rc, fmt.Sprintf("id: %d\ndata: %s\n\n", e.ID, b))
	}
	// retry: how soon EventSource reconnects after the stream ends.
	if err := write(w, rc, "retry: 1000\n\n"); err != nil {
		return nil
	}
	for _, e := range replay {
		if send(e) != nil {
			return nil
		}
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		select {
		case e := <-sub.ch:
			if send(e) != nil {
				return nil
			}
		case <-beat.C:
			if write(w, rc, ": still here\n\n") != nil {
				return nil
			}
		case <-sub.dropped:
			return nil // fell behind; the page resumes with Last-Event-ID
		case <-l.closing:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// write sends s and flushes it, giving the client writeWait to take it
// (beyond the server's own write timeout, which a stream outlives).
func write(w http.ResponseWriter, rc *http.ResponseController, s string) error {
	if err := rc.SetWriteDeadline(time.Now().Add(writeWait)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := w.Write([]byte(s)); err != nil {
		return err
	}
	return rc.Flush()
}
