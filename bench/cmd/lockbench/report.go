package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lockbank/lockbank/bench/locks"
)

// results is what results.json holds.
type results struct {
	Started  time.Time     `json:"started"`
	Machine  machine       `json:"machine"`
	Postgres postgresInfo  `json:"postgres"`
	Settings settings      `json:"settings"`
	Baseline string        `json:"baseline"`
	Impls    []*implResult `json:"implementations"`
}

type machine struct {
	NumCPU       int    `json:"num_cpu"`
	GoVersion    string `json:"go_version"`
	LoadAvgStart string `json:"loadavg_start"` // /proc/loadavg: 1, 5, 15 minutes
	LoadAvgEnd   string `json:"loadavg_end"`
}

type postgresInfo struct {
	Version           string `json:"version"`
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
}

type settings struct {
	Duration      string `json:"duration"`
	Slices        int    `json:"slices"`
	Warmup        string `json:"warmup"`
	Workers       int    `json:"workers"`
	MaxCycles     int    `json:"max_cycles"`
	HandoffRounds int    `json:"handoff_rounds"`
	HandoffTime   string `json:"handoff_time"`
	HandoffPause  string `json:"handoff_pause"`
	LeaseTTL      string `json:"lease_ttl"`
}

type implResult struct {
	Name        string  `json:"name"`
	Durable     bool    `json:"durable"`
	Fenced      bool    `json:"fenced"`
	CommitsOnly bool    `json:"commits_only,omitempty"`
	Notes       string  `json:"notes"`
	Error       string  `json:"error,omitempty"`
	Uncontended cycles  `json:"uncontended"`
	Parallel    cycles  `json:"parallel"`
	Contended   cycles  `json:"contended"`
	Handoff     handoff `json:"handoff"`
}

func newResults(cfg config, pg postgresInfo) *results {
	r := &results{
		Started:  time.Now().UTC(),
		Machine:  machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadAvg()},
		Postgres: pg,
		Settings: settings{
			Duration: cfg.duration.String(), Slices: cfg.slices, Warmup: cfg.warmup.String(), Workers: cfg.workers, MaxCycles: cfg.maxCycles,
			HandoffRounds: cfg.handoffRounds, HandoffTime: cfg.handoffTime.String(), HandoffPause: cfg.handoffPause.String(),
			LeaseTTL: locks.LeaseTTL.String(),
		},
		Baseline: locks.PGLock.Name,
	}
	for _, name := range cfg.impls {
		impl, _ := locks.ByName(name)
		r.Impls = append(r.Impls, &implResult{Name: impl.Name, Durable: impl.Durable, Fenced: impl.Fenced, CommitsOnly: impl.CommitsOnly, Notes: impl.Notes})
	}
	return r
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// printTable prints one row per implementation, each figure followed by its
// ratio to the baseline's (pglock) in the same run.
func printTable(w io.Writer, res *results) {
	var base *implResult
	for _, r := range res.Impls {
		if r.Name == res.Baseline && r.Error == "" {
			base = r
		}
	}
	ratio := func(v float64, pick func(*implResult) float64) string {
		if base == nil || pick(base) == 0 {
			return ""
		}
		return " " + times(v/pick(base))
	}
	fmt.Fprintf(w, "\n%d CPUs, load %s → %s; %s; fsync=%s synchronous_commit=%s\n", res.Machine.NumCPU,
		res.Machine.LoadAvgStart, res.Machine.LoadAvgEnd, pgShortVersion(res.Postgres.Version), res.Postgres.Fsync, res.Postgres.SynchronousCommit)
	fmt.Fprintf(w, "c/s = acquire+release cycles per second; ×r = ratio to %s in this run; hand-off: lower is better, from the holder's release returning (and from its call)\n\n", res.Baseline)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "implementation\tdurable\tfenced\t1 worker c/s\t8 parallel c/s\t8 on one c/s\tfairness min/max of mean, longest run\thand-off p50 ms\tp99 ms\tfrom release call p50\tn")
	for _, r := range res.Impls {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\tskipped: %s\n", r.Name, yes(r.Durable), yes(r.Fenced), r.Error)
			continue
		}
		u, p, c, h := r.Uncontended, r.Parallel, r.Contended, r.Handoff
		if r.CommitsOnly {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f%s\t%.0f%s\t(not a lock)\n", r.Name, yes(r.Durable), yes(r.Fenced),
				u.CyclesPerSec, ratio(u.CyclesPerSec, func(b *implResult) float64 { return b.Uncontended.CyclesPerSec }),
				p.CyclesPerSec, ratio(p.CyclesPerSec, func(b *implResult) float64 { return b.Parallel.CyclesPerSec }))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f%s\t%.0f%s\t%.0f%s\t%.2f / %.2f, %d of %d\t%s%s\t%s\t%s\t%d\n",
			r.Name, yes(r.Durable), yes(r.Fenced),
			u.CyclesPerSec, ratio(u.CyclesPerSec, func(b *implResult) float64 { return b.Uncontended.CyclesPerSec }),
			p.CyclesPerSec, ratio(p.CyclesPerSec, func(b *implResult) float64 { return b.Parallel.CyclesPerSec }),
			c.CyclesPerSec, ratio(c.CyclesPerSec, func(b *implResult) float64 { return b.Contended.CyclesPerSec }),
			c.MinOfMean, c.MaxOfMean, c.LongestRun, c.Cycles,
			sig(h.P50ms), ratio(h.P50ms, func(b *implResult) float64 { return b.Handoff.P50ms }), sig(h.P99ms), sig(h.FromCallP50ms), h.Rounds)
	}
	tw.Flush()
	for _, r := range res.Impls {
		for _, e := range []struct {
			what string
			n    int
			err  string
		}{{"uncontended", r.Uncontended.Errors, r.Uncontended.FirstError}, {"parallel", r.Parallel.Errors, r.Parallel.FirstError},
			{"contended", r.Contended.Errors, r.Contended.FirstError}, {"hand-off", 0, r.Handoff.Error}} {
			if e.err != "" {
				fmt.Fprintf(w, "%s %s: %d errors, first: %s\n", r.Name, e.what, e.n, e.err)
			}
		}
	}
	fmt.Fprintln(w, "\nnotes:")
	for _, r := range res.Impls {
		fmt.Fprintf(w, "  %s: %s\n", r.Name, r.Notes)
	}
	fmt.Fprintln(w, "  durable: a grant is a flushed commit and survives a crash of the server; fenced: grants carry a")
	fmt.Fprintln(w, "  token the protected data can check. Advisory locks and Redis are neither; pglock is durable, not fenced.")
}

// sig formats v with three significant digits, without an exponent.
func sig(v float64) string {
	if v >= 100 || v <= -100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// times formats a ratio: ×0.67, ×9.8, or ×1/4580 when it is tiny.
func times(r float64) string {
	if r > 0 && r < 0.01 {
		return fmt.Sprintf("×1/%.0f", 1/r)
	}
	return "×" + sig(r)
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// pgShortVersion turns "PostgreSQL 15.14 (Debian …) on x86_64…" into "PostgreSQL 15.14".
func pgShortVersion(v string) string {
	f := strings.Fields(v)
	return strings.Join(f[:min(2, len(f))], " ")
}

func writeJSON(path string, res *results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
