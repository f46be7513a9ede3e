package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
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
