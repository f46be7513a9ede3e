package lockmgr

import "github.com/prometheus/client_golang/prometheus"

// Collector returns a's series, to register once on a registry: the TTL it
// gives leases now and the critical sections it has learned from. Apart
// from the Manager's collector (metrics.go), since an AutoTTL belongs to
// whoever takes the leases, not to the Manager that grants them.
func (a *AutoTTL) Collector() prometheus.Collector {
	return ttlCollector{a: a,
		ttl: prometheus.NewDesc("lockbank_lease_learned_ttl_seconds",
			"The lease TTL learned from recent critical sections (lockmgr.AutoTTL: a high quantile of their durations times a safety factor, clamped), given to the next lease.", nil, nil),
		samples: prometheus.NewDesc("lockbank_lease_learned_ttl_samples",
			"Recent critical-section durations the learned lease TTL is fitted to (at most the window).", nil, nil),
	}
}

type ttlCollector struct {
	a            *AutoTTL
	ttl, samples *prometheus.Desc
}

func (c ttlCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.ttl; ch <- c.samples }

func (c ttlCollector) Collect(ch chan<- prometheus.Metric) {
	ttl, n := c.a.state()
	ch <- prometheus.MustNewConstMetric(c.ttl, prometheus.GaugeValue, ttl.Seconds())
	ch <- prometheus.MustNewConstMetric(c.samples, prometheus.GaugeValue, float64(n))
}
