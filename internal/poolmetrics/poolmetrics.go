// Package poolmetrics exposes a pgxpool's statistics (pool.Stat) to
// Prometheus. It reads them at every scrape, so it costs the pool nothing
// between scrapes.
package poolmetrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector reads a pool's Stat at every scrape.
type Collector struct {
	pool                                        *pgxpool.Pool
	acquired, idle, total, max                  *prometheus.Desc
	acquires, acquireWait, emptyAcquires, waits *prometheus.Desc
}

// New returns a Collector of pool, for the caller to register.
func New(pool *pgxpool.Pool) *Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("lockbank_db_pool_"+name, help, nil, nil)
	}
	return &Collector{
		pool:          pool,
		acquired:      d("acquired_connections", "Connections of the pool in use."),
		idle:          d("idle_connections", "Connections of the pool idle."),
		total:         d("total_connections", "Connections of the pool: in use, idle and being opened."),
		max:           d("max_connections", "The pool's maximum size."),
		acquires:      d("acquires_total", "Connections acquired from the pool."),
		acquireWait:   d("acquire_wait_seconds_total", "Time spent acquiring connections from the pool."),
		emptyAcquires: d("empty_acquires_total", "Acquires that waited for a connection because the pool was empty."),
		waits:         d("empty_acquire_wait_seconds_total", "Time acquires spent waiting for a connection because the pool was empty."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.acquires, c.acquireWait, c.emptyAcquires, c.waits} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.max, float64(s.MaxConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.acquireWait, s.AcquireDuration().Seconds())
	counter(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(c.waits, s.EmptyAcquireWaitTime().Seconds())
}
