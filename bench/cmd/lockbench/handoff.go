package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lockbank/lockbank/bench/locks"
)

// The hand-off measurement runs the waiter in a second process (this binary's
// hidden "waiter" subcommand), so that the waiter's wake-up is not a goroutine
// of the holder's scheduler. Both processes read the same system clock, so
// time.Now().UnixNano() in one is comparable with the other's.
//
// Each round, over the waiter's stdin/stdout:
//
//	holder: acquires the lock, sends "wait"
//	waiter: prints "waiting", blocks in Acquire
//	holder: sleeps cfg.handoffPause (the waiter is now queued), releases, notes t0
//	waiter: holds the lock at t1; prints "acquired t1", releases, prints "released"
//
// The hand-off latency is t1 - t0: from the holder's release returning to the
// waiter holding the lock. It can be slightly negative when the waiter gets
// the lock before the holder hears back from its release.

// handoff is the result of the hand-off measurement.
type handoff struct {
	Rounds int     `json:"rounds"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	// FromCallP50ms measures from the moment the holder calls release
	// instead of from its return: a release that returns before its commit
	// is flushed (lockmgr's) moves work from before the return to after it.
	FromCallP50ms float64   `json:"from_release_call_p50_ms"`
	SamplesMs     []float64 `json:"samples_ms"`
	Error         string    `json:"error,omitempty"`
	TimeLimitS    float64   `json:"time_limit_s"`
}

// waiterPGEnv passes the PostgreSQL URL to the waiter.
const waiterPGEnv = "LOCKBENCH_WAITER_PG_URL"

func measureHandoff(ctx context.Context, impl string, lk locks.Locker, env locks.Env, resource string, cfg config) handoff {
	h := handoff{TimeLimitS: cfg.handoffTime.Seconds()}
	samples, fromCall, err := handoffRounds(ctx, impl, lk, env, resource, cfg)
	if err != nil {
		h.Error = err.Error()
	}
	h.Rounds = len(samples)
	if len(samples) == 0 {
		return h
	}
	ms := millis(samples)
	h.SamplesMs = slices.Clone(ms)
	slices.Sort(ms)
	h.P50ms, h.P99ms, h.MaxMs = percentile(ms, 0.50), percentile(ms, 0.99), ms[len(ms)-1]
	callMs := millis(fromCall)
	slices.Sort(callMs)
	h.FromCallP50ms = percentile(callMs, 0.50)
	return h
}

func millis(ds []time.Duration) []float64 {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / 1e6
	}
	return ms
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// handoffRounds returns each round's hand-off latency from the holder's
// release returning, and from its release call.
func handoffRounds(ctx context.Context, impl string, lk locks.Locker, env locks.Env, resource string, cfg config) (samples, fromCall []time.Duration, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(cfg.handoffTime)
	// A waiter that never gets the lock is killed: the last round may start
	// just before the deadline and a pglock waiter sleeps a whole lease.
	cctx, cancel := context.WithDeadline(ctx, deadline.Add(20*time.Second))
	defer cancel()
	cmd := exec.CommandContext(cctx, exe, "waiter", "-impl", impl, "-resource", resource, "-redis", env.RedisAddr)
	// The URL holds the password: not on the command line, where ps shows it.
	cmd.Env = append(os.Environ(), waiterPGEnv+"="+env.PostgresURL)
	cmd.Stderr = os.Stderr
	toWaiter, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	fromWaiter, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	defer func() {
		toWaiter.Close() // the waiter exits at the end of its input
		cmd.Wait()
	}()
	lines := bufio.NewScanner(fromWaiter)
	expect := func(prefix string) (string, error) {
		if !lines.Scan() {
			if err := errors.Join(lines.Err(), cctx.Err()); err != nil {
				return "", fmt.Errorf("waiter ended before saying %q: %w", prefix, err)
			}
			return "", fmt.Errorf("waiter ended before saying %q (see its error above)", prefix)
		}
		rest, ok := strings.CutPrefix(lines.Text(), prefix)
		if !ok {
			return "", fmt.Errorf("waiter said %q, want %q", lines.Text(), prefix)
		}
		return strings.TrimSpace(rest), nil
	}
	if _, err := expect("ready"); err != nil {
		return nil, nil, err
	}

	for round := 0; round < cfg.handoffRounds && time.Now().Before(deadline); round++ {
		release, err := lk.Acquire(cctx, resource)
		if err != nil {
			return samples, fromCall, err
		}
		if _, err := fmt.Fprintln(toWaiter, "wait"); err != nil {
			release(cctx)
			return samples, fromCall, err
		}
		if _, err := expect("waiting"); err != nil {
			release(cctx)
			return samples, fromCall, err
		}
		time.Sleep(cfg.handoffPause)
		called := time.Now().UnixNano()
		if err := release(cctx); err != nil {
			return samples, fromCall, err
		}
		t0 := time.Now().UnixNano()
		at, err := expect("acquired")
		if err != nil {
			return samples, fromCall, err
		}
		t1, err := strconv.ParseInt(at, 10, 64)
		if err != nil {
			return samples, fromCall, err
		}
		if _, err := expect("released"); err != nil {
			return samples, fromCall, err
		}
		samples = append(samples, time.Duration(t1-t0))
		fromCall = append(fromCall, time.Duration(t1-called))
	}
	return samples, fromCall, nil
}

// runWaiter is the "waiter" subcommand: the other side of handoffRounds.
func runWaiter(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("lockbench waiter", flag.ContinueOnError)
	name := fs.String("impl", "", "implementation")
	resource := fs.String("resource", "", "resource to wait for")
	env := locks.Env{PostgresURL: os.Getenv(waiterPGEnv)}
	fs.StringVar(&env.RedisAddr, "redis", "", "redis address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	impl, ok := locks.ByName(*name)
	if !ok {
		return fmt.Errorf("waiter: unknown implementation %q", *name)
	}
	lk, err := impl.Open(ctx, env)
	if err != nil {
		return fmt.Errorf("waiter: %w", err)
	}
	defer lk.Close()
	// Warm up: open connections (and lockmgr's listener) before the first
	// round, so that no round is an outlier and pglock's few rounds all count.
	for range 3 {
		release, err := lk.Acquire(ctx, *resource+".warmup")
		if err != nil {
			return fmt.Errorf("waiter: warm-up: %w", err)
		}
		if err := release(ctx); err != nil {
			return fmt.Errorf("waiter: warm-up: %w", err)
		}
	}
	fmt.Fprintln(stdout, "ready")
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		fmt.Fprintln(stdout, "waiting")
		release, err := lk.Acquire(ctx, *resource)
		t1 := time.Now().UnixNano()
		if err != nil {
			return fmt.Errorf("waiter: %w", err)
		}
		fmt.Fprintln(stdout, "acquired", t1)
		if err := release(ctx); err != nil {
			return fmt.Errorf("waiter: %w", err)
		}
		fmt.Fprintln(stdout, "released")
	}
	return in.Err()
}
