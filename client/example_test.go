package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/bankdtest"
)

// A client opens an account, deposits with an Idempotency-Key (a retry is
// answered from the first outcome, never applied twice), is refused a
// withdrawal of more than the balance, and reads the ledger.
func Example() {
	ctx := context.Background()
	bank := client.New(bankdtest.StartExample()) // e.g. client.New("http://127.0.0.1:8080")

	acct, err := bank.CreateAccount(ctx, "alice", 5000)
	if err != nil {
		panic(err)
	}
	for range 2 { // the second is a retry, as after a timeout
		var resp client.Response
		entry, err := bank.Deposit(ctx, acct.ID, 500, client.IdempotencyKey("salary-2026-11"), client.CaptureResponse(&resp))
		if err != nil {
			panic(err)
		}
		fmt.Printf("deposit: balance %d, replayed %v\n", entry.Balance, resp.Replayed)
	}

	_, err = bank.Withdraw(ctx, acct.ID, client.Withdrawal{Amount: 9000})
	var refusal *client.Error
	if errors.As(err, &refusal) {
		fmt.Println("refused:", refusal.Status, refusal.Code)
	}

	for entry, err := range bank.Ledger(ctx, acct.ID) {
		if err != nil {
			panic(err)
		}
		fmt.Println("ledger:", entry.Kind, entry.Amount, "→", entry.Balance)
	}
	// Output:
	// deposit: balance 5500, replayed false
	// deposit: balance 5500, replayed true
	// refused: 409 insufficient_funds
	// ledger: deposit 500 → 5500
}

// A holder takes the account's lock, keeps it alive while it works, and
// sends its fencing token with the write; a holder whose lease was taken
// over is refused with stale_fencing_token.
func ExampleClient_KeepAlive() {
	ctx := context.Background()
	bank := client.New(bankdtest.StartExample())
	acct, err := bank.CreateAccount(ctx, "bob", 5000)
	if err != nil {
		panic(err)
	}
	resource := fmt.Sprintf("account:%d", acct.ID)

	lease, err := bank.Acquire(ctx, resource, client.LockRequest{Holder: "worker-1", TTL: 2 * time.Second, Wait: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	keep := bank.KeepAlive(ctx, lease)
	// … work under keep.Context() …
	_, err = bank.Withdraw(keep.Context(), acct.ID, client.Withdrawal{Amount: 1000}, client.FencingToken(keep.Lease().Token))
	fmt.Println("withdrawal with the live token:", err)

	// worker-1 stops renewing (as if frozen); worker-2 waits out its lease.
	keep.Stop()
	next, err := bank.Acquire(ctx, resource, client.LockRequest{Holder: "worker-2", TTL: 2 * time.Second, Wait: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	_, err = bank.Withdraw(ctx, acct.ID, client.Withdrawal{Amount: 1000}, client.FencingToken(lease.Token))
	fmt.Println("late withdrawal by worker-1:", client.ErrorCode(err))
	fmt.Println("worker-2 releases:", bank.Release(ctx, resource, next.ID))
	// Output:
	// withdrawal with the live token: <nil>
	// late withdrawal by worker-1: stale_fencing_token
	// worker-2 releases: <nil>
}
