package account_test

import (
	"sync"
	"testing"
	"time"

	"github.com/lockbank/lockbank/account"
)

func TestIdempotency(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{UnsafeDemo: true})

	t.Run("ReplaysSuccess", func(t *testing.T) {
		a := mustCreate(t, svc, 1000)
		c := account.Change{AccountID: a.ID, Amount: 400, Strategy: account.StrategyRow, IdempotencyKey: "k1"}
		first, err := svc.Withdraw(b.ctx, c)
		if err != nil || first.Replayed {
			t.Fatalf("first = %+v, %v", first, err)
		}
		again, err := svc.Withdraw(b.ctx, c)
		if err != nil || !again.Replayed || again.Entry != first.Entry {
			t.Fatalf("retry = %+v, %v; want replay of %+v", again, err, first.Entry)
		}
		if balance, entries := checkMoney(t, b, a.ID); balance != 600 || len(entries) != 1 || entries[0].IdempotencyKey != "k1" {
			t.Fatalf("balance %d, entries %+v", balance, entries)
		}
	})
	t.Run("ReplaysRefusal", func(t *testing.T) {
		a := mustCreate(t, svc, 100)
		c := account.Change{AccountID: a.ID, Amount: 400, Strategy: account.StrategyRow, IdempotencyKey: "k2"}
		_, err1 := svc.Withdraw(b.ctx, c)
		if account.ErrorCode(err1) != account.CodeInsufficientFunds {
			t.Fatalf("first = %v", err1)
		}
		// Money arrives, but the retry still gets the first outcome: the key is spent.
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 1000}); err != nil {
			t.Fatal(err)
		}
		res, err2 := svc.Withdraw(b.ctx, c)
		if !res.Replayed || err2 == nil || err2.Error() != err1.Error() {
			t.Fatalf("retry = %+v, %v; want replayed %v", res, err2, err1)
		}
		if balance, _ := checkMoney(t, b, a.ID); balance != 1100 {
			t.Fatalf("balance %d, want 1100", balance)
		}
	})
	t.Run("KeyReusedForDifferentRequest", func(t *testing.T) {
		a := mustCreate(t, svc, 1000)
		if _, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 10, Strategy: account.StrategyRow, IdempotencyKey: "k3"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []account.Change{
			{AccountID: a.ID, Amount: 11, Strategy: account.StrategyRow, IdempotencyKey: "k3"},
			{AccountID: a.ID, Amount: 10, Strategy: account.StrategyUnsafe, IdempotencyKey: "k3"},
		} {
			if _, err := svc.Withdraw(b.ctx, c); account.ErrorCode(err) != account.CodeIdempotencyKeyReused {
				t.Fatalf("Withdraw(%+v) = %v, want %s", c, err, account.CodeIdempotencyKeyReused)
			}
		}
		if _, err := svc.Deposit(b.ctx, account.Change{AccountID: a.ID, Amount: 10, IdempotencyKey: "k3"}); account.ErrorCode(err) != account.CodeIdempotencyKeyReused {
			t.Fatalf("Deposit with a withdrawal's key = %v, want %s", err, account.CodeIdempotencyKeyReused)
		}
		if balance, entries := checkMoney(t, b, a.ID); balance != 990 || len(entries) != 1 {
			t.Fatalf("balance %d with %d entries, want 990 with 1", balance, len(entries))
		}
	})
	t.Run("SameKeyOnAnotherAccountIsIndependent", func(t *testing.T) {
		a1, a2 := mustCreate(t, svc, 100), mustCreate(t, svc, 100)
		for _, id := range []int64{a1.ID, a2.ID} {
			if res, err := svc.Withdraw(b.ctx, account.Change{AccountID: id, Amount: 10, Strategy: account.StrategyRow, IdempotencyKey: "shared"}); err != nil || res.Replayed {
				t.Fatalf("account %d: %+v, %v", id, res, err)
			}
		}
	})
	for _, strategy := range []account.Strategy{account.StrategyRow, account.StrategyUnsafe} {
		t.Run("ConcurrentSameKey/"+string(strategy), func(t *testing.T) {
			a := mustCreate(t, svc, 1000)
			const n = 20
			start := make(chan struct{})
			var wg sync.WaitGroup
			var mu sync.Mutex
			var fresh, replayed int
			for range n {
				wg.Go(func() {
					<-start
					res, err := svc.Withdraw(b.ctx, account.Change{AccountID: a.ID, Amount: 100, Strategy: strategy, IdempotencyKey: "same", Hold: 50 * time.Millisecond})
					if err != nil {
						t.Errorf("Withdraw: %v", err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if res.Replayed {
						replayed++
					} else {
						fresh++
					}
				})
			}
			close(start)
			wg.Wait()
			if fresh != 1 || replayed != n-1 {
				t.Fatalf("fresh %d, replayed %d; want 1 and %d", fresh, replayed, n-1)
			}
			if balance, entries := checkMoney(t, b, a.ID); balance != 900 || len(entries) != 1 {
				t.Fatalf("balance %d with %d entries, want 900 with 1", balance, len(entries))
			}
		})
	}
}
