package pgerr_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockbank/lockbank/internal/pgerr"
	"github.com/lockbank/lockbank/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestConnClosedIsALostSession: pgconn's "conn closed" is marked safe to
// retry, but pgconn also returns it when the connection closed while an
// answer was awaited, after the statement (a COMMIT, say) was sent. It must
// not read as "nothing was sent" (Unavailable): the commit may have been
// made.
func TestConnClosedIsALostSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "COMMIT").ReadAll()
	if err == nil || !pgconn.SafeToRetry(err) {
		t.Fatalf("a call on a closed connection: %v (safe to retry: %v); want pgconn's conn closed, marked safe to retry", err, pgconn.SafeToRetry(err))
	}
	if got := pgerr.Classify(err); got != pgerr.SessionLost {
		t.Fatalf("Classify(%v) = %v, want SessionLost", err, got)
	}
}
