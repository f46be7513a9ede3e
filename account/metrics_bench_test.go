package account

import (
	"testing"
	"time"
)

// BenchmarkMetricsOfAChange is the bookkeeping the Service's metrics do
// for one row withdrawal down the lone path — its answer (count and
// latency), its transaction's path and batch size, and its row lock — to
// set beside what a withdrawal costs bankd in all (BENCHMARKS.md).
func BenchmarkMetricsOfAChange(b *testing.B) {
	m := newMetrics()
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.lockedRow(pathLone, start)
		m.applied(pathLone, 1)
		m.answered(KindWithdrawal, StrategyRow, start, Result{}, nil)
	}
}
