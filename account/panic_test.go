package account

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockbank/lockbank/internal/wait"
)

// TestCombinerSurvivesAPanic: when applying a batch panics, every change in
// it is answered (outcome unknown, since its transaction might have
// committed), the changes queued behind it are applied by the next worker,
// and the account keeps working — on the row path and the lease path.
func TestCombinerSurvivesAPanic(t *testing.T) {
	t.Parallel()
	for _, strategy := range []Strategy{StrategyRow, StrategyLease} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			const clients, amount, opening = 16, 10, 1000
			s, pool, _, a := newService(t, opening)
			queue := queueKey{a.ID, strategy}
			var panicked atomic.Bool
			s.combine.beforeApply = func(batch []*pending) {
				if panicked.Swap(true) {
					return
				}
				// Panic only once the other clients are queued behind
				// this batch, so that the panic strands them if it can.
				if !wait.For(10*time.Second, func() bool {
					s.combine.mu.Lock()
					defer s.combine.mu.Unlock()
					return len(s.combine.queues[queue]) == clients-1
				}) {
					t.Errorf("the other %d clients never queued", clients-1)
				}
				panic("injected")
			}

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := make(chan struct{})
			errs := make([]error, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					<-start
					_, errs[i] = s.Withdraw(ctx, Change{AccountID: a.ID, Amount: amount, Strategy: strategy, IdempotencyKey: fmt.Sprint("k", i)})
				})
			}
			close(start)
			wg.Wait()

			var unknown []int
			for i, err := range errs {
				switch {
				case errors.Is(err, ErrOutcomeUnknown):
					unknown = append(unknown, i)
				case err != nil:
					t.Fatalf("client %d: %v (want success, or outcome unknown for the panicked batch)", i, err)
				}
			}
			if len(unknown) != 1 || !panicked.Load() {
				t.Fatalf("%d clients answered outcome unknown (%v), panicked %v; want exactly the one whose batch panicked", len(unknown), unknown, panicked.Load())
			}
			// The account still works, and the stranded change, retried with
			// its key, is applied once (the panic came before its transaction).
			retry := unknown[0]
			res, err := s.Withdraw(ctx, Change{AccountID: a.ID, Amount: amount, Strategy: strategy, IdempotencyKey: fmt.Sprint("k", retry)})
			if err != nil || res.Replayed {
				t.Fatalf("retry of the panicked change: %+v, %v; want applied now", res, err)
			}
			if _, err := s.Deposit(ctx, Change{AccountID: a.ID, Amount: 1}); err != nil {
				t.Fatalf("deposit after the panic: %v", err)
			}
			balance, entries, keys := accountState(t, pool, a.ID)
			if want := int64(opening - clients*amount + 1); balance != want || entries != clients+1 || keys != clients {
				t.Fatalf("balance %d, %d entries, %d keys; want %d, %d, %d", balance, entries, keys, want, clients+1, clients)
			}
		})
	}
}
