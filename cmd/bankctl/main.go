package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockbank/lockbank/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var exit *exitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		if exit.msg != "" {
			fmt.Fprintln(os.Stderr, "bankctl:", exit.msg)
		}
		os.Exit(exit.code)
	default:
		fmt.Fprintln(os.Stderr, "bankctl:", err)
		os.Exit(exitTrouble)
	}
}

// Exit codes, documented in the usage text.
const (
	exitOK      = 0 // the scenario showed what it promises
	exitUnsafe  = 1 // a safe strategy lost or invented money, or the demo did not show its point
	exitUsage   = 2 // bad command line
	exitTrouble = 3 // the cluster could not be started or reached
)

type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

func trouble(err error) error { return &exitError{code: exitTrouble, msg: err.Error()} }

// answer is what a withdrawal got: its entry (status 201), or the refusal's
// status and code, or status 0 and "transport_error: …" when none came.
type answer struct {
	status int
	code   string
	entry  client.Entry
}

func withdraw(ctx context.Context, api *client.Client, id int64, w client.Withdrawal, opts ...client.CallOption) answer {
	e, err := api.Withdraw(ctx, id, w, opts...)
	var refusal *client.Error
	switch {
	case err == nil:
		return answer{status: 201, entry: e}
	case errors.As(err, &refusal):
		return answer{status: refusal.Status, code: refusal.Code}
	}
	return answer{code: "transport_error: " + err.Error()}
}
