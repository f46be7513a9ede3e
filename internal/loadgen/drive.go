package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/client"
)

// op is one closed-loop operation; it returns the problem code of a
// refusal ("" for success) or an error when no answer came.
type op func(ctx context.Context, rng *rand.Rand, account int64) (code string, err error)

// newHTTPClient keeps a connection for each client of the largest level.
func newHTTPClient(conns int) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = conns
	return &http.Client{Transport: transport, Timeout: time.Minute}
}

// bankdOp withdraws one unit through bankd with strategy; the operations
// take turns on the nodes.
func bankdOp(hc *http.Client, nodes []string, strategy string) op {
	apis := make([]*client.Client, len(nodes))
	for i, url := range nodes {
		apis[i] = client.New(url, client.WithHTTPClient(hc))
	}
	var next sync.Mutex
	i := 0
	pick := func() *client.Client {
		next.Lock()
		defer next.Unlock()
		i++
		return apis[i%len(apis)]
	}
	w := client.Withdrawal{Amount: 1, Strategy: strategy}
	return func(ctx context.Context, _ *rand.Rand, account int64) (string, error) {
		_, err := pick().Withdraw(ctx, account, w)
		var refusal *client.Error
		switch {
		case err == nil:
			return "", nil
		case !errors.As(err, &refusal):
			return "", err
		case refusal.Code == "":
			return fmt.Sprintf("http_%d", refusal.Status), nil
		}
		return refusal.Code, nil
	}
}

// scrape GETs /metrics of every node every interval, as Prometheus would,
// until the returned stop is called; with no nodes or interval, nothing.
// stop lets a scrape in flight finish rather than cancel it, so that every
// scrape is over, on the node too, when its run is: a cancelled one could
// still be served during the next run.
func scrape(ctx context.Context, hc *http.Client, nodes []string, every time.Duration) (stop func()) {
	if len(nodes) == 0 || every <= 0 {
		return func() {}
	}
	stopping := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stopping:
				return
			case <-tick.C:
			}
			for _, u := range nodes {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/metrics", nil)
				if err != nil {
					continue
				}
				if resp, err := hc.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	}()
	return func() { close(stopping); <-done }
}

// rawSQLOp is the row strategy's transaction without bankd: lock the row,
// check funds, update, append to the ledger, commit. The baseline, so its
// own SQL on purpose: what an application without lockbank would send.
func rawSQLOp(pool *pgxpool.Pool) op {
	return func(ctx context.Context, _ *rand.Rand, account int64) (string, error) {
		code := ""
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var balance int64
			if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE id = $1 FOR UPDATE`, account).Scan(&balance); err != nil {
				return err
			}
			if balance < 1 {
				code = "insufficient_funds"
				return nil
			}
			var after int64
			if err := tx.QueryRow(ctx, `UPDATE accounts SET balance = balance - 1, updated_at = now() WHERE id = $1 RETURNING balance`, account).Scan(&after); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO ledger_entries (account_id, kind, amount, balance_after, strategy) VALUES ($1, 'withdrawal', 1, $2, 'raw-sql')`, account, after)
			return err
		})
		return code, err
	}
}

// drive runs op from clients goroutines in a closed loop: warm-up, then the
// measured window. Only operations that start and end inside the window
// count; the run stops when the window closes (each operation in flight
// finishes or times out first).
func drive(ctx context.Context, clients int, warmup, duration time.Duration, ids []int64, op op) Run {
	start := time.Now()
	from, until := start.Add(warmup), start.Add(warmup+duration)
	type tally struct {
		latencies []time.Duration
		errors    map[string]int
		total     int // every operation, in the window or not
	}
	tallies := make([]tally, clients)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			t := &tallies[i]
			t.errors = map[string]int{}
			<-ready
			for time.Now().Before(until) && ctx.Err() == nil {
				account := ids[0]
				if len(ids) > 1 {
					account = ids[rng.IntN(len(ids))]
				}
				opCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				began := time.Now()
				code, err := op(opCtx, rng, account)
				ended := time.Now()
				cancel()
				t.total++
				if began.Before(from) || ended.After(until) {
					continue
				}
				switch {
				case err != nil:
					t.errors[errorCode(err)]++
				case code != "":
					t.errors[code]++
				default:
					t.latencies = append(t.latencies, ended.Sub(began))
				}
			}
		})
	}
	close(ready) // the start barrier: every client is spawned before any begins
	wg.Wait()

	r := Run{Clients: clients, Seconds: duration.Seconds(), Errors: map[string]int{}}
	var all []time.Duration
	for _, t := range tallies {
		all = append(all, t.latencies...)
		r.total += t.total
		for code, n := range t.errors {
			r.Errors[code] += n
		}
	}
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	r.OK = len(all)
	r.Throughput = float64(r.OK) / duration.Seconds()
	slices.Sort(all)
	r.P50Ms, r.P95Ms, r.P99Ms = percentileMs(all, 0.50), percentileMs(all, 0.95), percentileMs(all, 0.99)
	return r
}

func percentileMs(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return float64(sorted[max(i, 0)].Microseconds()) / 1000
}

// errorCode names a failure without an answer: a timeout, or a transport or
// database error.
func errorCode(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

// ErrorSummary lists errors by code, "  errors: code×n …", or "" for none.
func ErrorSummary(errs map[string]int) string {
	if len(errs) == 0 {
		return ""
	}
	codes := make([]string, 0, len(errs))
	for code, n := range errs {
		codes = append(codes, fmt.Sprintf("%s×%d", code, n))
	}
	sort.Strings(codes)
	return "  errors: " + strings.Join(codes, " ")
}
