// Command bankd is lockbank's bank-account service: a REST API over accounts,
// deposits, withdrawals and their ledger, on PostgreSQL.
//
// With no DATABASE_URL it starts a private PostgreSQL from the server binaries
// installed on the machine, so `go run ./cmd/bankd` works with no setup.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bankd:", err)
		os.Exit(1)
	}
}
