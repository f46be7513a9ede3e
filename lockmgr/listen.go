package lockmgr

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// notifyChannel is where Release announces, at commit, that a resource is
// free: the payload is "resource token".
const notifyChannel = "lockmgr_release"

// listener keeps one dedicated connection that LISTENs for releases and, for
// every resource this Manager has callers waiting on, holds the shared
// advisory lock that makes releases of that resource notify (sqlRelease).
// Notifications only make waiting faster: waiters also wake when the lease
// they wait for runs out, so a lost connection or an engine without NOTIFY
// delays them, never strands them.
type listener struct {
	config *pgx.ConnConfig
	// notified is called for each release heard; all after (re)connecting,
	// when releases may have gone unheard.
	notified func(resource string, token int64)
	all      func()

	mu    sync.Mutex
	want  map[string]bool            // resources with waiters here: hold their advisory locks
	have  map[string]bool            // the advisory locks the current session holds
	acks  map[string][]chan struct{} // register calls waiting for their lock
	up    bool                       // connected and listening
	tried bool                       // a first connection attempt has ended
	// dirty: want changed since sync last found nothing to do. interrupt
	// ends the current wait for notifications (nil when not waiting), so
	// that the loop syncs at once.
	dirty     bool
	interrupt context.CancelFunc

	running bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func newListener(config *pgx.ConnConfig, notified func(string, int64), all func()) *listener {
	config = config.Copy()
	// The loop interrupts its wait for notifications to take or drop advisory
	// locks. A read deadline does that and leaves the connection usable; a
	// cancel request (if the pool's config asks for one) could hit the next
	// statement instead.
	config.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	// Bounded, and long: a registration waits at most for one release's commit.
	if config.RuntimeParams == nil {
		config.RuntimeParams = map[string]string{}
	}
	config.RuntimeParams["lock_timeout"] = "10s"
	return &listener{
		config: config, notified: notified, all: all,
		want: map[string]bool{}, have: map[string]bool{}, acks: map[string][]chan struct{}{},
	}
}

// register makes releases of resource notify this listener, starting it on
// first use. It returns true once the advisory lock is held, or at once when
// the connection is down (the loop takes the lock, and wakes every waiter,
// when it is back); false only if ctx ended first.
func (l *listener) register(ctx context.Context, resource string) bool {
	l.mu.Lock()
	l.start()
	l.want[resource] = true
	if l.have[resource] || (l.tried && !l.up) {
		l.mu.Unlock()
		return true
	}
	ack := make(chan struct{})
	l.acks[resource] = append(l.acks[resource], ack)
	l.kickLoop()
	l.mu.Unlock()
	select {
	case <-ack:
		return true
	case <-ctx.Done():
		return false
	}
}

// unregister drops resource's advisory lock (soon, not at once).
func (l *listener) unregister(resource string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.want, resource)
	l.kickLoop()
}

// kickLoop makes the loop bring the session's locks in line with want.
// Called with mu held.
func (l *listener) kickLoop() {
	l.dirty = true
	if l.interrupt != nil {
		l.interrupt()
		l.interrupt = nil
	}
}

// start runs the loop if it is not running. Called with mu held.
func (l *listener) start() {
	if l.running {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.running, l.cancel, l.done = true, cancel, make(chan struct{})
	go l.loop(ctx)
}

func (l *listener) loop(ctx context.Context) {
	defer close(l.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := l.listen(ctx)
		l.mu.Lock()
		l.up, l.tried = false, true
		clear(l.have)
		l.releaseAcks(func(string) bool { return true }) // waiters sleep on their expiry timers until we are back
		l.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		_ = err
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
	l.mu.Lock()
	l.up = true
	l.mu.Unlock()
	if err := l.sync(ctx, conn); err != nil {
		return err
	}
	// Releases that happened while we were not listening went unheard.
	l.all()
	for {
		n, err := l.wait(ctx, conn)
		if n != nil {
			resource, token := parsePayload(n.Payload)
			l.notified(resource, token)
		}
		if err != nil {
			return err
		}
		if err := l.sync(ctx, conn); err != nil {
			return err
		}
	}
}

// wait returns the next notification, or nil when kicked.
func (l *listener) wait(ctx context.Context, conn *pgx.Conn) (*pgconn.Notification, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	if l.dirty {
		l.mu.Unlock()
		return nil, nil
	}
	l.interrupt = cancel
	l.mu.Unlock()
	n, err := conn.WaitForNotification(wctx)
	l.mu.Lock()
	l.interrupt = nil
	l.mu.Unlock()
	if err != nil && ctx.Err() == nil && wctx.Err() != nil && !conn.IsClosed() {
		err = nil // kicked: the read deadline interrupted the wait, the session is fine
	}
	return n, err
}

// sync takes the advisory locks of resources now waited for and drops
// those no longer waited for, answering the register calls as it goes.
func (l *listener) sync(ctx context.Context, conn *pgx.Conn) error {
	for {
		resource, take := l.nextChange()
		if resource == "" {
			return nil
		}
		stmt := sqlUnregisterWaiter
		if take {
			stmt = sqlRegisterWaiter
		}
		if _, err := conn.Exec(ctx, stmt, resource); err != nil {
			return err
		}
		if take {
			l.mu.Lock()
			l.have[resource] = true
			l.releaseAcks(func(r string) bool { return r == resource })
			l.mu.Unlock()
		}
	}
}

// nextChange picks a lock to drop (first) or to take; "" when the session
// holds exactly the locks wanted. A lock to drop is forgotten now, before
// it is dropped: a register call meanwhile must wait for the lock to be
// taken again, not trust one that is going away.
func (l *listener) nextChange() (resource string, take bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for r := range l.have {
		if !l.want[r] {
			delete(l.have, r)
			return r, false
		}
	}
	for r := range l.want {
		if !l.have[r] {
			return r, true
		}
	}
	l.dirty = false
	return "", false
}

// releaseAcks answers the register calls for the resources that match.
// Called with mu held.
func (l *listener) releaseAcks(match func(string) bool) {
	for r, acks := range l.acks {
		if match(r) {
			for _, ack := range acks {
				close(ack)
			}
			delete(l.acks, r)
		}
	}
}

// parsePayload splits "resource token". A payload without a token (from an
// older lockmgr) has token 0, which wakes waiters unconditionally.
func parsePayload(payload string) (resource string, token int64) {
	i := strings.LastIndexByte(payload, ' ')
	if i < 0 {
		return payload, 0
	}
	token, err := strconv.ParseInt(payload[i+1:], 10, 64)
	if err != nil {
		return payload, 0
	}
	return payload[:i], token
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
