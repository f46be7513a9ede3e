package web

import (
	"testing"
	"time"
)

// BenchmarkMetricsOfARequest is the bookkeeping the HTTP metrics do for
// one request (in flight, count and latency by route), to set beside what
// a request costs bankd in all (BENCHMARKS.md).
func BenchmarkMetricsOfARequest(b *testing.B) {
	m := NewMetrics()
	b.ReportAllocs()
	for b.Loop() {
		m.begin()
		m.observe("/v1/accounts/{id}/withdrawals", "POST", 201, time.Millisecond)
		m.end()
	}
}
