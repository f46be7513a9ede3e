package account

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgtest"
)

// terminateOwnSession ends the session of tx from another connection, as
// pg_terminate_backend or a database restart would.
func terminateOwnSession(t *testing.T, s *Service, tx pgx.Tx) {
	t.Helper()
	ctx := context.Background()
	var pid int
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	// With a timeout, pg_terminate_backend returns only once the backend has
	// exited, so its FATAL is already on the session's socket.
	var gone bool
	if err := s.pool.QueryRow(ctx, `SELECT pg_terminate_backend($1, 10000)`, pid).Scan(&gone); err != nil || !gone {
		t.Fatalf("terminate backend %d: %v (gone: %v)", pid, err, gone)
	}
}

func TestInTxTellsUnknownCommitsFromCertainFailures(t *testing.T) {
	t.Parallel()
	s := NewService(pgtest.New(t), Options{})
	ctx := context.Background()

	t.Run("SessionLostBeforeCommit", func(t *testing.T) {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			terminateOwnSession(t, s, tx)
			_, err := tx.Exec(ctx, `SELECT 1`)
			return err
		})
		if !IsUnavailable(err) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("inTx = %v; want a certain failure (IsUnavailable), not an unknown outcome", err)
		}
	})
	t.Run("SessionLostAtCommit", func(t *testing.T) {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			terminateOwnSession(t, s, tx)
			return nil // the next thing sent is COMMIT
		})
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("inTx = %v; want ErrOutcomeUnknown", err)
		}
	})
	t.Run("RefusedCommitIsCertain", func(t *testing.T) {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			// A deferred check fails at COMMIT: the server answers, rolled back.
			_, err := tx.Exec(ctx, `CREATE TEMP TABLE t (x int UNIQUE DEFERRABLE INITIALLY DEFERRED) ON COMMIT DROP;
				INSERT INTO t VALUES (1), (1)`)
			return err
		})
		if err == nil || errors.Is(err, ErrOutcomeUnknown) || IsUnavailable(err) {
			t.Fatalf("inTx = %v; want the server's refusal as it is", err)
		}
	})
}

// TestWrapTellsLostSessions: a session lost outside a commit is "unavailable,
// nothing changed"; a commit whose outcome is unknown stays unknown.
func TestWrapTellsLostSessions(t *testing.T) {
	lost := wrap(KindWithdrawal, fmt.Errorf("lease: lockmgr: acquire account:1: %w", io.ErrUnexpectedEOF))
	if !IsUnavailable(lost) || errors.Is(lost, ErrOutcomeUnknown) {
		t.Errorf("a session lost before any commit: %v; want unavailable", lost)
	}
	unknown := wrap(KindWithdrawal, fmt.Errorf("%w: %w", ErrOutcomeUnknown, io.ErrUnexpectedEOF))
	if !errors.Is(unknown, ErrOutcomeUnknown) || IsUnavailable(unknown) {
		t.Errorf("a lost commit: %v; want outcome unknown only", unknown)
	}
	if other := wrap(KindWithdrawal, errors.New("syntax error")); IsUnavailable(other) {
		t.Errorf("a plain error: %v; want neither", other)
	}
}

// TestSessionEndedWhileWaiting: a change whose session is terminated while
// it waits for the row lock changes nothing. In a batch's transaction that is
// certain — COMMIT was never sent — and it is reported as unavailable. A lone
// change's statement commits itself, and a lost session cannot tell whether
// it got that far: its outcome is reported unknown, never as done or not done.
func TestSessionEndedWhileWaiting(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		unknown bool
		change  func(*Service, int64) error
	}{
		{"Batch", false, func(s *Service, id int64) error {
			c := Change{AccountID: id, Amount: 10, Strategy: StrategyRow}
			outs := make([]outcome, 1)
			return s.runBatch(context.Background(), []*pending{{ctx: context.Background(), kind: KindWithdrawal, change: c, hash: requestHash(KindWithdrawal, c)}}, outs, nil)
		}},
		{"Lone", true, func(s *Service, id int64) error {
			_, err := s.Withdraw(context.Background(), Change{AccountID: id, Amount: 10, Strategy: StrategyRow})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s, pool, _, a := newService(t, 100)
			blocker, done := changeBehindHeldRow(t, pool, a.ID, func() error { return tt.change(s, a.ID) })
			defer blocker.Rollback(ctx)
			if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
				t.Fatal(err)
			}
			err := <-done
			if tt.unknown && !errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("lone withdrawal whose session was ended: %v; want outcome unknown", err)
			}
			if !tt.unknown && (!IsUnavailable(err) || errors.Is(err, ErrOutcomeUnknown)) {
				t.Fatalf("batch whose session was ended: %v; want unavailable, certainly not committed", err)
			}
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if balance, entries, _ := accountState(t, pool, a.ID); balance != 100 || entries != 0 {
				t.Fatalf("balance %d with %d entries; want 100 with none", balance, entries)
			}
		})
	}
}
