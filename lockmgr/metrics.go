package lockmgr

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a Manager does, for Prometheus. It is a
// prometheus.Collector that the Manager owns and never registers: a library
// user registers it on a registry of their own (Manager.Collector), so that
// importing lockmgr has no side effects. No label names a resource or holder:
// the number of series stays fixed however many locks there are.
type Metrics struct {
	grants        *prometheus.CounterVec
	acquireWait   prometheus.Histogram
	renewals      *prometheus.CounterVec
	releases      *prometheus.CounterVec
	takeovers     prometheus.Counter
	keeperLost    prometheus.Counter
	fenceChecks   *prometheus.CounterVec
	wakeups       *prometheus.CounterVec
	waiters       prometheus.Gauge
	reconnects    prometheus.Counter
	live          *liveLeases
	collectors    []prometheus.Collector
	grantAcquired prometheus.Counter // grants' children, resolved once: no map lookup per call
	grantHeld     prometheus.Counter
	grantTimeout  prometheus.Counter
	grantError    prometheus.Counter
}

// Label values. Results of a grant:
const (
	GrantAcquired = "acquired" // a lease was granted
	GrantHeld     = "held"     // TryAcquire found the lock held
	GrantTimeout  = "timeout"  // Acquire's context ended before a grant
	GrantError    = "error"    // invalid arguments or a database failure
)

// Causes of a wake-up.
const (
	wakeNotify   = "notify"   // a release: through this Manager, or heard as a notification
	wakeExpiry   = "expiry"   // the lease waited for ran out by the local clock
	wakeListener = "listener" // the listener (re)connected: releases may have gone unheard
)

func newMetrics(pool *pgxpool.Pool) *Metrics {
	m := &Metrics{
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_lock_grants_total",
			Help: "Calls to TryAcquire and Acquire, by result: acquired, held (TryAcquire only), timeout (Acquire's context ended), error.",
		}, []string{"result"}),
		acquireWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lockbank_lock_acquire_wait_seconds",
			Help:    "Time from the start of an Acquire call to its grant.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_lock_renewals_total",
			Help: "Lease renewals, by result: renewed, lost (the lease ran out, was released or taken over), error.",
		}, []string{"result"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_lock_releases_total",
			Help: "Lease releases, by result: released (the lease was live when the release began), already_expired (the newest grant, but it had run out or been released before), not_holder (an older grant or unknown lease id), error.",
		}, []string{"result"}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbank_lock_takeovers_total",
			Help: "Grants that took over a lease which had run out without being released. A lease renewed past its first TTL and then released counts too: telling the two apart would take a column the lease table does not have.",
		}),
		keeperLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbank_lock_keepalive_lost_total",
			Help: "Leases a KeepAlive gave up as lost (a renewal found them gone, or their deadline passed unrenewed).",
		}),
		fenceChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_lock_fence_checks_total",
			Help: "Fencing-token checks (Manager.CheckFence), by result: ok, stale, expired, mismatch, error.",
		}, []string{"result"}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_lock_wakeups_total",
			Help: "Times the head of an Acquire line, having had its turn, was woken to ask the database again, by cause: notify (a release, through this Manager or notified; one through this Manager may wake the head twice, at once and by its own notification), expiry (the lease it waited for ran out by the local clock), listener (the notification listener connected or reconnected, after which every head asks again, since releases may have gone unheard).",
		}, []string{"cause"}),
		waiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lockbank_lock_waiters",
			Help: "Acquire calls of this Manager waiting in line.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbank_lock_listener_reconnects_total",
			Help: "Times the notification listener connected again after its connection failed or was lost (its first connection is not counted).",
		}),
		live: newLiveLeases(pool),
	}
	m.grantAcquired = m.grants.WithLabelValues(GrantAcquired)
	m.grantHeld = m.grants.WithLabelValues(GrantHeld)
	m.grantTimeout = m.grants.WithLabelValues(GrantTimeout)
	m.grantError = m.grants.WithLabelValues(GrantError)
	// Every label value exists from the start, so that a rate over a
	// counter that has not moved yet is 0 rather than absent.
	for _, r := range []string{"renewed", "lost", "error"} {
		m.renewals.WithLabelValues(r)
	}
	for _, r := range []string{"released", "already_expired", "not_holder", "error"} {
		m.releases.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "stale", "expired", "mismatch", "error"} {
		m.fenceChecks.WithLabelValues(r)
	}
	for _, c := range []string{wakeNotify, wakeExpiry, wakeListener} {
		m.wakeups.WithLabelValues(c)
	}
	m.collectors = []prometheus.Collector{m.grants, m.acquireWait, m.renewals, m.releases, m.takeovers,
		m.keeperLost, m.fenceChecks, m.wakeups, m.waiters, m.reconnects, m.live}
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors {
		c.Collect(ch)
	}
}

// Collector returns the Manager's metrics, to register on a registry:
// reg.MustRegister(m.Collector()). Register it once per registry.
func (m *Manager) Collector() prometheus.Collector { return m.metrics }

func (m *Metrics) grantErr(err error, waited bool) {
	switch {
	case errors.Is(err, ErrHeld) && !waited:
		m.grantHeld.Inc()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		m.grantTimeout.Inc()
	default:
		m.grantError.Inc()
	}
}

func (m *Metrics) granted(start time.Time, waited bool) {
	m.grantAcquired.Inc()
	if waited {
		m.acquireWait.Observe(time.Since(start).Seconds())
	}
}

func (m *Metrics) renewal(err error) {
	switch {
	case err == nil:
		m.renewals.WithLabelValues("renewed").Inc()
	case errors.Is(err, ErrLeaseLost):
		m.renewals.WithLabelValues("lost").Inc()
	default:
		m.renewals.WithLabelValues("error").Inc()
	}
}

func (m *Metrics) release(expired bool, err error) {
	switch {
	case err == nil && expired:
		m.releases.WithLabelValues("already_expired").Inc()
	case err == nil:
		m.releases.WithLabelValues("released").Inc()
	case errors.Is(err, ErrNotHolder):
		m.releases.WithLabelValues("not_holder").Inc()
	default:
		m.releases.WithLabelValues("error").Inc()
	}
}

// fenceResult names CheckFence's answer err.
func fenceResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrStaleToken):
		return "stale"
	case errors.Is(err, ErrLeaseExpired):
		return "expired"
	case errors.Is(err, ErrTokenMismatch):
		return "mismatch"
	default:
		return "error"
	}
}

// liveLeases is the gauge of live leases, read from the database at each
// scrape: a lease is live by the database's clock, whoever holds it, and no
// Manager sees another's grants or knows when a lease ran out. Every node
// reports the same, database-wide number (take max, not sum, across nodes).
type liveLeases struct {
	pool *pgxpool.Pool
	desc *prometheus.Desc
}

// liveLeasesTimeout bounds a scrape's count, so that a database that does
// not answer delays /metrics by at most this much.
const liveLeasesTimeout = 2 * time.Second

func newLiveLeases(pool *pgxpool.Pool) *liveLeases {
	return &liveLeases{pool: pool, desc: prometheus.NewDesc("lockbank_lock_live_leases",
		"Leases live now by the database's clock, of every holder in the database (the same on every node), read at each scrape; absent when the database does not answer.",
		nil, nil)}
}

func (l *liveLeases) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect counts the live leases. On a database failure it sends nothing:
// the other metrics are still served, and an absent series says why.
func (l *liveLeases) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), liveLeasesTimeout)
	defer cancel()
	var n int64
	if err := l.pool.QueryRow(ctx, sqlCountLive).Scan(&n); err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(n))
}
