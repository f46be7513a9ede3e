package lockmgr

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is where Release announces, at commit, that a resource is free.
const notifyChannel = "lockmgr_release"

// listener keeps one dedicated connection LISTENing and wakes the waiters of
// a resource when its release is announced. Notifications only make waiting
// faster: waiters also wake when the lease they wait for runs out, so a lost
// connection or an engine without NOTIFY delays them, never strands them.
type listener struct {
	config *pgx.ConnConfig

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
	running bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func newListener(config *pgx.ConnConfig) *listener {
	return &listener{config: config.Copy(), waiters: map[string]map[chan struct{}]struct{}{}}
}

// subscribe returns a channel that receives when resource is released, and
// the function to stop listening. It starts the listener on first use.
func (l *listener) subscribe(resource string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.running {
		ctx, cancel := context.WithCancel(context.Background())
		l.running, l.cancel, l.done = true, cancel, make(chan struct{})
		go l.loop(ctx)
	}
	if l.waiters[resource] == nil {
		l.waiters[resource] = map[chan struct{}]struct{}{}
	}
	l.waiters[resource][ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.waiters[resource], ch)
		if len(l.waiters[resource]) == 0 {
			delete(l.waiters, resource)
		}
	}
}

// wake signals the waiters of resource, or of every resource when all is
// true (after a reconnect, when notifications may have been missed).
func (l *listener) wake(resource string, all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for r, chans := range l.waiters {
		if !all && r != resource {
			continue
		}
		for ch := range chans {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func (l *listener) loop(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		_ = err // waiters fall back to their expiry timers until we are back
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (l *listener) listen(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, l.config)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	// Releases that happened while we were not listening went unheard.
	l.wake("", true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		l.wake(n.Payload, false)
	}
}

func (l *listener) close() {
	l.mu.Lock()
	running, cancel, done := l.running, l.cancel, l.done
	l.running = false
	l.mu.Unlock()
	if running {
		cancel()
		<-done
	}
}
