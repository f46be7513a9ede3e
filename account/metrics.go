package account

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lockbank/lockbank/internal/pgerr"
)

// Metrics counts a Service's deposits and withdrawals, for Prometheus. The
// Service owns it and never registers it: bankd (or any user of the
// package) registers Service.Collector on a registry of its own. Labels
// name a strategy, an outcome code, a kind or a path, never an account.
type Metrics struct {
	changes    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	batchSize  prometheus.Histogram
	batches    *prometheus.CounterVec
	unknown    prometheus.Counter
	replays    prometheus.Counter
	rowLock    *prometheus.HistogramVec
	retries    *prometheus.CounterVec
	collectors []prometheus.Collector
	pathLone   prometheus.Counter // batches' children, resolved once
	pathBatch  prometheus.Counter
	pathLease  prometheus.Counter
	pathDemo   prometheus.Counter
	// rowLock's and retries' children, resolved once (and every label value
	// present from the start).
	rowLockPath map[string]prometheus.Observer
	retryReason map[string]prometheus.Counter
}

// Outcome labels besides the Code constants.
const (
	outcomeOK          = "ok"
	outcomeUnknown     = "outcome_unknown"
	outcomeUnavailable = "unavailable"
	outcomeInternal    = "internal"
)

// Paths a transaction takes (the package comment's table).
const (
	pathLone       = "lone"
	pathBatch      = "batch"
	pathLeaseBatch = "lease_batch"
	pathDemo       = "demo"
)

// Reasons a transaction runs again.
const (
	retrySerialization = "serialization_failure"
	retryDeadlock      = "deadlock"
	retryUnique        = "unique_violation"
	retryBalanceMoved  = "balance_moved"
	retryLeaseRefused  = "lease_refused"
)

func newMetrics() *Metrics {
	m := &Metrics{
		rowLockPath: map[string]prometheus.Observer{},
		retryReason: map[string]prometheus.Counter{},
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_account_changes_total",
			Help: "Deposits and withdrawals answered, by kind (deposit, withdrawal), strategy and outcome (ok, or the refusal's code, outcome_unknown, unavailable, internal).",
		}, []string{"kind", "strategy", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lockbank_account_change_duration_seconds",
			Help:    "Time a deposit or withdrawal took, queue and lock waits included, by kind and strategy.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"kind", "strategy"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lockbank_account_batch_size",
			Help:    "Changes applied in one transaction (the per-account combiner's batches; 1 for a lone statement or a demonstration).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_account_batch_transactions_total",
			Help: "Batches of changes applied, by path: lone (one autocommitted statement), batch (row batch), lease_batch, demo.",
		}, []string{"path"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbank_account_outcome_unknown_total",
			Help: "Changes answered outcome unknown: the connection failed while their commit was under way.",
		}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lockbank_account_idempotent_replays_total",
			Help: "Changes answered with the stored outcome of an earlier request with the same Idempotency-Key.",
		}),
		rowLock: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "lockbank_account_row_lock_seconds",
			Help: "Time from sending the statement that takes an account's row lock to its answer, by path: " +
				"lone (the whole one-statement change), batch (the pipeline of BEGIN, SELECT ... FOR UPDATE and the keys' lookup), " +
				"demo (the row strategy's FOR UPDATE read). The wait for the lock plus one round trip: a change queued " +
				"in this node behind a busy account waits in its queue first (see change duration), not here.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"path"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lockbank_account_retries_total",
			Help: "Times a change's transaction ran again, by reason: serialization_failure and deadlock (PostgreSQL aborted it " +
				"over another transaction), unique_violation (a request with one of its idempotency keys committed first), " +
				"balance_moved (a lease write found the balance changed by a row writer since its read), lease_refused " +
				"(the fence refused this node's own lease; taken again). A lone statement aborted over another transaction " +
				"and run again as a batch counts too; one that found a stored outcome and went on to a batch to replay it does not.",
		}, []string{"reason"}),
	}
	m.pathLone = m.batches.WithLabelValues(pathLone)
	m.pathBatch = m.batches.WithLabelValues(pathBatch)
	m.pathLease = m.batches.WithLabelValues(pathLeaseBatch)
	m.pathDemo = m.batches.WithLabelValues(pathDemo)
	for _, p := range []string{pathLone, pathBatch, pathDemo} {
		m.rowLockPath[p] = m.rowLock.WithLabelValues(p)
	}
	for _, r := range []string{retrySerialization, retryDeadlock, retryUnique, retryBalanceMoved, retryLeaseRefused} {
		m.retryReason[r] = m.retries.WithLabelValues(r)
	}
	m.collectors = []prometheus.Collector{m.changes, m.latency, m.batchSize, m.batches, m.unknown, m.replays, m.rowLock, m.retries}
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

// Collector returns the Service's metrics, to register on a registry once.
func (s *Service) Collector() prometheus.Collector { return s.metrics }

// answered records one change's answer.
func (m *Metrics) answered(kind string, strategy Strategy, start time.Time, res Result, err error) {
	m.changes.WithLabelValues(kind, string(strategy), outcomeLabel(err)).Inc()
	m.latency.WithLabelValues(kind, string(strategy)).Observe(time.Since(start).Seconds())
	if res.Replayed {
		m.replays.Inc()
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		m.unknown.Inc()
	}
}

// applied records one transaction of n changes down path.
func (m *Metrics) applied(path string, n int) {
	switch path {
	case pathLone:
		m.pathLone.Inc()
	case pathBatch:
		m.pathBatch.Inc()
	case pathLeaseBatch:
		m.pathLease.Inc()
	default:
		m.pathDemo.Inc()
	}
	m.batchSize.Observe(float64(n))
}

// lockedRow records how long the statement that took an account's row lock
// on path took, from start.
func (m *Metrics) lockedRow(path string, start time.Time) {
	m.rowLockPath[path].Observe(time.Since(start).Seconds())
}

// retried records that a transaction runs again after err, which must be
// one of the reasons retryReason tells.
func (m *Metrics) retried(err error) {
	if c := m.retryReason[retryReason(err)]; c != nil {
		c.Inc()
	}
}

// retryReason names why err is worth running again ("" if it is not one of
// the reasons counted).
func retryReason(err error) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, errLeaseRefused):
		return retryLeaseRefused
	case errors.Is(err, errBalanceMoved):
		return retryBalanceMoved
	case pgerr.Conflict(err) && errors.As(err, &pgErr) && pgErr.Code == "40P01":
		return retryDeadlock
	case pgerr.Conflict(err):
		return retrySerialization
	case uniqueViolation(err):
		return retryUnique
	}
	return ""
}

// outcomeLabel names err for the changes counter.
func outcomeLabel(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case ErrorCode(err) != "":
		return ErrorCode(err)
	case errors.Is(err, ErrOutcomeUnknown):
		return outcomeUnknown
	case IsUnavailable(err):
		return outcomeUnavailable
	default:
		return outcomeInternal
	}
}
