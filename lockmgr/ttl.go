package lockmgr

import (
	"math"
	"slices"
	"sync"
	"time"
)

// AutoTTL learns a lease TTL from the durations of the holder's recent
// critical sections: a high quantile of them times a safety factor, clamped
// to [Min, Max]. Quick work gets short leases, so a holder that crashes
// blocks others for less; slow work gets longer ones. A critical section
// that outlasts its lease anyway (the first slow one after many quick ones)
// must be kept alive by KeepAlive, which renews the lease long before its
// local deadline: the learned TTL bounds how long a dead holder blocks
// others, never how long a live one may work.
//
// Use: ttl := a.TTL(); l, err := m.Acquire(ctx, resource, holder, ttl);
// start := time.Now(); do the work (under KeepAlive); a.Observe(time.Since(start)).
// It is safe for concurrent use.
type AutoTTL struct {
	opts AutoTTLOptions

	mu      sync.Mutex
	samples []time.Duration // a ring of the last Window durations
	next    int             // where the next sample goes
	seen    int             // samples observed since the TTL was last computed
	ttl     time.Duration   // the current learned TTL
}

// AutoTTLOptions configure an AutoTTL. Zero fields take the defaults.
type AutoTTLOptions struct {
	// Min and Max clamp the learned TTL. Defaults: MinTTL (100 ms) and 30 s.
	Min, Max time.Duration
	// Initial is the TTL until MinSamples durations are known. Default: Max.
	Initial time.Duration
	// Quantile of the recent durations the TTL is fitted to. Default 0.99.
	Quantile float64
	// Factor multiplies that quantile: room for a slower database, a GC
	// pause, a renewal's round trip. Default 4.
	Factor float64
	// Window is how many recent durations are kept. Default 256.
	Window int
	// MinSamples known before the TTL is learned. Default 16.
	MinSamples int
}

// NewAutoTTL returns an AutoTTL with opts (defaults filled in, Min raised to
// MinTTL and Max cut to MaxTTL).
func NewAutoTTL(opts AutoTTLOptions) *AutoTTL {
	if opts.Min < MinTTL {
		opts.Min = MinTTL
	}
	if opts.Max == 0 {
		opts.Max = 30 * time.Second
	}
	opts.Max = min(max(opts.Max, opts.Min), MaxTTL)
	if opts.Initial == 0 {
		opts.Initial = opts.Max
	}
	opts.Initial = min(max(opts.Initial, opts.Min), opts.Max)
	if opts.Quantile <= 0 || opts.Quantile > 1 {
		opts.Quantile = 0.99
	}
	if opts.Factor < 1 {
		opts.Factor = 4
	}
	if opts.Window <= 0 {
		opts.Window = 256
	}
	if opts.MinSamples <= 0 {
		opts.MinSamples = 16
	}
	opts.MinSamples = min(opts.MinSamples, opts.Window)
	return &AutoTTL{opts: opts, samples: make([]time.Duration, 0, opts.Window), ttl: opts.Initial}
}

// Options are a's options, defaults filled in.
func (a *AutoTTL) Options() AutoTTLOptions { return a.opts }

// TTL is the lease TTL to ask for now.
func (a *AutoTTL) TTL() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ttl
}

// Observe records how long one critical section lasted, from its grant to
// its release. A duration longer than the current TTL is learned at once,
// so that slow work lengthens the next lease without waiting for its turn;
// otherwise the TTL is fitted again every few samples, which keeps the cost
// of Observe small under load.
func (a *AutoTTL) Observe(d time.Duration) {
	if d < 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.samples) < a.opts.Window {
		a.samples = append(a.samples, d)
	} else {
		a.samples[a.next] = d
	}
	a.next = (a.next + 1) % a.opts.Window
	a.seen++
	if len(a.samples) < a.opts.MinSamples {
		return
	}
	if a.seen >= 8 || len(a.samples) == a.opts.MinSamples || a.fit(d) > a.ttl {
		a.ttl = a.fitted()
		a.seen = 0
	}
}

// fitted is the TTL for the samples now held. Called with mu held.
func (a *AutoTTL) fitted() time.Duration {
	sorted := slices.Clone(a.samples)
	slices.Sort(sorted)
	i := int(math.Ceil(a.opts.Quantile*float64(len(sorted)))) - 1
	return a.fit(sorted[max(i, 0)])
}

// fit is the TTL for a critical section lasting d: d times the factor,
// clamped.
func (a *AutoTTL) fit(d time.Duration) time.Duration {
	ttl := time.Duration(float64(d) * a.opts.Factor)
	return min(max(ttl, a.opts.Min), a.opts.Max)
}

// state is the TTL and the number of samples held, read together.
func (a *AutoTTL) state() (time.Duration, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ttl, len(a.samples)
}
