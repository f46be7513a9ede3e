package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/migrations"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// grant calls lockmgr_try_acquire with args (four: as a node of before
// 00006; five: with an owner) and reports whether it granted.
func grant(t *testing.T, db *sql.DB, query string, args ...any) bool {
	t.Helper()
	var granted bool
	if err := db.QueryRow(query, args...).Scan(&granted); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return granted
}

const (
	grantOld   = `SELECT granted FROM lockmgr_try_acquire($1, 'node', gen_random_uuid(), 60000)`
	grantOwned = `SELECT granted FROM lockmgr_try_acquire($1, 'node', gen_random_uuid(), 60000, $2)`
	expire     = `UPDATE leases SET expires_at = clock_timestamp() WHERE resource = $1`
)

// Test00006 checks what migration 00006 promises: nodes not yet upgraded
// still grant (and clear the owner of a lease they take over), an account's
// key_name never changes, and Down gives back 00005's schema and function.
func Test00006(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("pgx", pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	t.Run("OldNodesStillGrant", func(t *testing.T) {
		if !grant(t, db, grantOwned, "r:1", "alice") {
			t.Fatal("first grant with an owner refused")
		}
		if _, err := db.Exec(expire, "r:1"); err != nil {
			t.Fatal(err)
		}
		if !grant(t, db, grantOld, "r:1") {
			t.Fatal("takeover by the four-argument function refused")
		}
		var owner sql.NullString
		if err := db.QueryRow(`SELECT owner FROM leases WHERE resource = 'r:1'`).Scan(&owner); err != nil || owner.Valid {
			t.Fatalf("owner after an old node's takeover: %v (%v), want NULL", owner, err)
		}
	})

	t.Run("KeyNameNeverChanges", func(t *testing.T) {
		var id int64
		if err := db.QueryRow(`INSERT INTO accounts (owner, balance, opening_balance, key_name) VALUES ('a', 1, 1, 'alice') RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		_, err := db.Exec(`UPDATE accounts SET key_name = 'bob' WHERE id = $1`, id)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23001" {
			t.Fatalf("changing key_name: %v, want restrict_violation", err)
		}
		if _, err := db.Exec(`UPDATE accounts SET balance = 0, key_name = key_name WHERE id = $1`, id); err != nil {
			t.Fatalf("an update that keeps key_name: %v", err)
		}
		if _, err := db.Exec(`INSERT INTO accounts (owner, balance, opening_balance, key_name) VALUES ('a', 1, 1, 'no spaces')`); err == nil {
			t.Fatal("a key_name that no key can have was accepted")
		}
	})

	t.Run("DownAndUpAgain", func(t *testing.T) {
		p, err := migrations.NewProvider(db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 5); err != nil {
			t.Fatalf("down to 5: %v", err)
		}
		var columns int
		if err := db.QueryRow(`SELECT count(*) FROM information_schema.columns
			WHERE (table_name, column_name) IN (('leases', 'owner'), ('accounts', 'key_name'))`).Scan(&columns); err != nil || columns != 0 {
			t.Fatalf("%d of 00006's columns left after Down (%v)", columns, err)
		}
		var functions int
		if err := db.QueryRow(`SELECT count(*) FROM pg_proc WHERE proname IN ('lockmgr_try_acquire', 'accounts_key_name_fixed')`).Scan(&functions); err != nil || functions != 1 {
			t.Fatalf("%d functions after Down (%v), want only 00005's lockmgr_try_acquire", functions, err)
		}
		// 00005's function, plpgsql again, grants and takes over.
		if !grant(t, db, grantOld, "r:2") {
			t.Fatal("first grant after Down refused")
		}
		if _, err := db.Exec(expire, "r:2"); err != nil {
			t.Fatal(err)
		}
		if !grant(t, db, grantOld, "r:2") {
			t.Fatal("takeover after Down refused")
		}
		if _, err := p.Up(ctx); err != nil {
			t.Fatalf("up again: %v", err)
		}
		if !grant(t, db, grantOwned, "r:3", "alice") {
			t.Fatal("grant with an owner after Up again refused")
		}
	})
}

// Test00007 checks that Down gives back 00006's function (no guard, no
// lockmgr_next_token) and that Up brings the guard back.
func Test00007(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migrated(t)
	guard := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pg_proc WHERE proname = 'lockmgr_next_token'
			OR (proname = 'lockmgr_try_acquire' AND prosrc LIKE '%lockmgr_next_token%')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := guard(); n != 2 {
		t.Fatalf("after Up: %d of the guard's functions, want 2", n)
	}
	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatalf("down to 6: %v", err)
	}
	if n := guard(); n != 0 {
		t.Fatalf("after Down: %d of the guard's functions left, want 0", n)
	}
	if !grant(t, db, grantOwned, "r:1", "alice") {
		t.Fatal("grant after Down refused")
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if n := guard(); n != 2 {
		t.Fatalf("after Up again: %d of the guard's functions, want 2", n)
	}
	if _, err := db.Exec(expire, "r:1"); err != nil {
		t.Fatal(err)
	}
	if !grant(t, db, grantOwned, "r:1", "alice") {
		t.Fatal("takeover after Up again refused")
	}
}

// Test00009 checks that Down removes the lease for one statement and gives
// back 00008's lease events (a grant that ends with it is one event again),
// and that Up brings both back.
func Test00009(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migrated(t)
	state := func() (functions, releaseCase int) {
		t.Helper()
		if err := db.QueryRow(`SELECT count(*) FILTER (WHERE proname = 'lockmgr_grant_released'),
			count(*) FILTER (WHERE proname = 'live_lease_event' AND prosrc LIKE '%NEW.expires_at <= NEW.acquired_at%')
			FROM pg_proc`).Scan(&functions, &releaseCase); err != nil {
			t.Fatal(err)
		}
		return functions, releaseCase
	}
	if f, r := state(); f != 1 || r != 1 {
		t.Fatalf("after Up: function %d, release case %d; want 1 and 1", f, r)
	}
	if _, err := p.DownTo(ctx, 8); err != nil {
		t.Fatalf("down to 8: %v", err)
	}
	if f, r := state(); f != 0 || r != 0 {
		t.Fatalf("after Down: function %d, release case %d; want 0 and 0", f, r)
	}
	if !grant(t, db, grantOwned, "r:9", "alice") {
		t.Fatal("grant after Down refused")
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if f, r := state(); f != 1 || r != 1 {
		t.Fatalf("after Up again: function %d, release case %d; want 1 and 1", f, r)
	}
	if _, err := db.Exec(expire, "r:9"); err != nil {
		t.Fatal(err)
	}
	var token sql.NullInt64
	if err := db.QueryRow(`SELECT lockmgr_grant_released('r:9', 'node', 5000, NULL)`).Scan(&token); err != nil || !token.Valid {
		t.Fatalf("lease for one statement after Up again: %v (%v)", token, err)
	}
}

// migrated opens a fresh migrated database and its migrations' provider.
func migrated(t *testing.T) (*sql.DB, *goose.Provider) {
	t.Helper()
	db, err := sql.Open("pgx", pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p, err := migrations.NewProvider(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, p
}
