package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Event is one line of the timeline: a row of live_events.
type Event struct {
	ID        int64     `json:"id"`
	At        time.Time `json:"at"`
	Node      string    `json:"node"`
	Kind      string    `json:"kind"` // open, deposit, withdrawal, grant, takeover, renewal, release, refused
	Resource  *string   `json:"resource,omitempty"`
	AccountID *int64    `json:"account_id,omitempty"`
	Holder    *string   `json:"holder,omitempty"`
	Token     *int64    `json:"token,omitempty"`
	OldToken  *int64    `json:"old_token,omitempty"`
	Amount    *int64    `json:"amount,omitempty"`
	Balance   *int64    `json:"balance,omitempty"`
	Strategy  *string   `json:"strategy,omitempty"`
	Code      *string   `json:"code,omitempty"`
	Detail    *string   `json:"detail,omitempty"`
	// Batch counts the ledger entries its transaction wrote (deposits and
	// withdrawals only): a batch of one account's changes shares one.
	Batch int `json:"batch,omitempty"`
}

// Options tune a Live; zero values take the defaults.
type Options struct {
	UnsafeDemo bool          // the page offers the demo-mode scenarios
	LeaseTTL   time.Duration // the lease this node's lease withdrawals take (the page's no-fence story outwaits it)
	Logger     *slog.Logger  // default: none
	MaxStreams int           // concurrent /live/events streams; beyond, ErrTooManyStreams (default 32)
	Buffer     int           // events queued per stream; a stream that falls further behind is dropped (default 256)
	Poll       time.Duration
	// GapWait is how long the hub waits for a missing id below ones it has
	// read (a transaction that drew it and has not committed yet) before
	// it gives the id up as rolled back (default 2 s).
	GapWait   time.Duration
	Retention time.Duration // events older than this are pruned (default 10 minutes)
}

// ErrTooManyStreams: MaxStreams streams are open already.
var ErrTooManyStreams = errors.New("too many live event streams")

// Live serves the live page of one node and runs its hub. Close it to end
// its streams and stop its poller.
type Live struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	last    int64               // highest id delivered, in id order
	gaps    map[int64]time.Time // a missing id, and when it was first missed
	started bool
	streams int

	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	polls   atomic.Int64 // reads of the table done: tests wait for the hub by it
}

type subscriber struct {
	ch      chan Event
	dropped chan struct{} // closed when the hub dropped it for falling behind
}

// New returns a Live on pool, whose database must be migrated. Start its hub
// with Start.
func New(pool *pgxpool.Pool, opts Options) *Live {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = 32
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 1024
	}
	if opts.Poll <= 0 {
		opts.Poll = 200 * time.Millisecond
	}
	if opts.GapWait <= 0 {
		opts.GapWait = 2 * time.Second
	}
	if opts.Retention <= 0 {
		opts.Retention = 10 * time.Minute
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Live{pool: pool, opts: opts, log: logger, subs: map[*subscriber]struct{}{}, gaps: map[int64]time.Time{},
		closing: make(chan struct{}), done: make(chan struct{})}
}

// Start reads the newest event id, so that a stream opened from now on
// misses nothing, and starts the hub's poller; it runs until Close.
func (l *Live) Start(ctx context.Context) error {
	var last int64
	if err := l.pool.QueryRow(ctx, sqlMaxEventID).Scan(&last); err != nil {
		return fmt.Errorf("live: reading the newest event id: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return nil
	}
	l.started, l.last = true, last
	go l.poll()
	return nil
}

// Close ends every stream at once and stops the poller. It never waits for
// a stream's client: a stream returns as soon as it sees closing.
func (l *Live) Close() {
	l.once.Do(func() { close(l.closing) })
	l.mu.Lock()
	started := l.started
	l.mu.Unlock()
	if started {
		<-l.done
	}
}

const sqlMaxEventID = `SELECT coalesce(max(id), 0) FROM live_events`

// Events after $1 and at most $2, oldest first. Batch is counted over the
// rows read: a transaction's rows commit together, so they are read
// together (unless the limit cuts them, which only shrinks the count).
const sqlEventsAfter = `
SELECT id, at, node, kind, resource, account_id, holder, token, old_token, amount, balance, strategy, code, detail,
       (count(*) FILTER (WHERE kind IN ('deposit', 'withdrawal')) OVER (PARTITION BY xact))::int
FROM live_events
WHERE id > $1 AND id <= $2
ORDER BY id
LIMIT $3`

// Prunes what outlived the retention, pruneBatch rows at a time, skipping
// rows another node's pruner has locked, so that pruners never wait for
// each other.
const sqlPruneEvents = `
DELETE FROM live_events
WHERE id = ANY (ARRAY(SELECT id FROM live_events WHERE at < now() - $1 * interval '1 millisecond'
                      ORDER BY id LIMIT 10000 FOR UPDATE SKIP LOCKED))`

// Pruning runs every pruneEvery, in batches of pruneBatch rows until a batch
// comes back short, at most pruneBatches of them: up to a million rows a
// run per node, far beyond what the poller can read.
const (
	pruneEvery   = 10 * time.Second
	pruneBatch   = 10000
	pruneBatches = 100
)

func (l *Live) poll() {
	defer close(l.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(l.opts.Poll)
	defer tick.Stop()
	nextPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := l.readNew(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("live: reading events", "err", err)
		}
		l.polls.Add(1)
		if time.Now().After(nextPrune) {
			nextPrune = time.Now().Add(pruneEvery)
			l.prune(ctx)
		}
	}
}

// prune deletes the events older than the retention (invariant 12: nothing
// grows forever).
func (l *Live) prune(ctx context.Context) {
	for range pruneBatches {
		tag, err := l.pool.Exec(ctx, sqlPruneEvents, l.opts.Retention.Milliseconds())
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("live: pruning events", "err", err)
			}
			return
		}
		if tag.RowsAffected() < pruneBatch {
			return
		}
	}
}

// readNew reads the events after the last delivered one and delivers them
// in id order. Ids are drawn before their transaction commits, so an id can
// become visible after a higher one: the hub stops at a missing id and waits
// for it up to GapWait, then gives it up (its transaction rolled back, or
// is still running: a page then misses that one event). So a stream's ids
// only ever rise, and Last-Event-ID is a complete resume point.
func (l *Live) readNew(ctx context.Context) error {
	l.mu.Lock()
	after := l.last
	l.mu.Unlock()
	events, err := l.read(ctx, after, 1<<62, 1000)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for _, e := range events {
		if e.ID != l.last+1 {
			first, seen := l.gaps[l.last+1]
			if !seen {
				l.gaps[l.last+1] = now
				break
			}
			if now.Sub(first) < l.opts.GapWait {
				break
			}
		}
		l.deliver(e)
	}
	for id := range l.gaps {
		if id <= l.last {
			delete(l.gaps, id)
		}
	}
	return nil
}

// deliver hands e to every subscriber without ever waiting: one whose
// buffer is full is dropped (its stream ends, and its page resumes from the
// table with Last-Event-ID). l.mu is held.
func (l *Live) deliver(e Event) {
	l.last = e.ID
	for s := range l.subs {
		select {
		case s.ch <- e:
		default:
			delete(l.subs, s)
			close(s.dropped)
		}
	}
}

func (l *Live) read(ctx context.Context, after, upTo int64, limit int) ([]Event, error) {
	rows, _ := l.pool.Query(ctx, sqlEventsAfter, after, upTo, limit)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
		var e Event
		err := row.Scan(&e.ID, &e.At, &e.Node, &e.Kind, &e.Resource, &e.AccountID, &e.Holder, &e.Token, &e.OldToken,
			&e.Amount, &e.Balance, &e.Strategy, &e.Code, &e.Detail, &e.Batch)
		return e, err
	})
}

// subscribe registers a stream, or refuses it beyond MaxStreams. It
// returns the id up to which the stream must replay from the table itself:
// everything above comes through s.ch.
func (l *Live) subscribe() (*subscriber, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams >= l.opts.MaxStreams {
		return nil, 0, ErrTooManyStreams
	}
	select {
	case <-l.closing:
		return nil, 0, ErrTooManyStreams
	default:
	}
	l.streams++
	s := &subscriber{ch: make(chan Event, l.opts.Buffer), dropped: make(chan struct{})}
	l.subs[s] = struct{}{}
	return s, l.last, nil
}

func (l *Live) unsubscribe(s *subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams--
	delete(l.subs, s)
}
