// Package pgtest gives every test its own freshly migrated PostgreSQL database.
//
// One server serves a whole test binary; each test gets a new database cloned
// from a migrated template (CREATE DATABASE … TEMPLATE), so tests run in
// parallel without seeing each other's rows. Where the server comes from, in
// order:
//
//  1. TEST_DATABASE_URL, a server you run yourself;
//  2. testcontainers-go's postgres module when a Docker daemon answers (image
//     PGTEST_IMAGE, default postgres:17-alpine);
//  3. the PostgreSQL server binaries installed on this machine (internal/pglocal).
//
// PGTEST_BACKEND=url|docker|local forces one of them and fails rather than
// falling back, so that CI can prove it really ran containers.
//
// A package that uses pgtest calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lockbank/lockbank/internal/pglocal"
	"github.com/lockbank/lockbank/migrations"
)

// DefaultImage is the container image used when PGTEST_IMAGE is unset.
const DefaultImage = "postgres:17-alpine"

var (
	startOnce sync.Once
	startErr  error
	adminURL  string // a URL of the server's maintenance database
	template  string // the migrated template database
	stop      func() // shuts down what Main started
	createMu  sync.Mutex
	dbSeq     atomic.Int64
)

// Main runs the tests and then stops the server it started, if any.
func Main(m *testing.M) int {
	code := m.Run()
	if stop != nil {
		stop()
	}
	return code
}

// URL returns the connection URL of a new, migrated, empty database that is
// dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	startOnce.Do(func() { startErr = start() })
	if startErr != nil {
		t.Fatalf("pgtest: no PostgreSQL for tests: %v", startErr)
	}
	ctx := context.Background()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := createFromTemplate(ctx, name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})
	return withDatabase(adminURL, name)
}

// ExampleURL is URL for testable examples, which have no testing.TB: the
// database is dropped when Main ends, and a failure panics.
func ExampleURL() string {
	startOnce.Do(func() { startErr = start() })
	if startErr != nil {
		panic(fmt.Sprintf("pgtest: no PostgreSQL for tests: %v", startErr))
	}
	name := fmt.Sprintf("x_%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := createFromTemplate(context.Background(), name); err != nil {
		panic(err)
	}
	prevStop := stop
	stop = func() {
		_ = exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		if prevStop != nil {
			prevStop()
		}
	}
	return withDatabase(adminURL, name)
}

// New returns a pool on a new migrated database (see URL); the pool is closed
// when t ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), URL(t))
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Pool returns another pool on the database at url (from URL), opened as a
// separate node would open it: its own connections, named name in
// pg_stat_activity (application_name), so that tests can see which node
// waits for what. The pool is closed when t ends.
func Pool(t testing.TB, url, name string) *pgxpool.Pool {
	t.Helper()
	return Configured(t, url, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["application_name"] = name
	})
}

// Configured returns a pool on the database at url (from URL) with the
// settings configure makes to its config first (a tracer, a session
// setting, a pool size). The pool is closed when t ends.
func Configured(t testing.TB, url string, configure func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	configure(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var err error
	switch backend := os.Getenv("PGTEST_BACKEND"); backend {
	case "url":
		err = startURL()
	case "docker":
		err = startContainer(ctx)
	case "local":
		err = startLocal(ctx)
	case "":
		switch {
		case os.Getenv("TEST_DATABASE_URL") != "":
			err = startURL()
		default:
			// Prefer a container whose image is already here; never make the
			// daemon pull one when the local binaries can serve instead.
			daemon, imagePresent := dockerImage(ctx, pgImage())
			_, noBinaries := pglocal.FindBinDir()
			switch {
			case daemon && imagePresent, daemon && noBinaries != nil:
				err = startContainer(ctx)
			default:
				err = startLocal(ctx)
			}
		}
	default:
		return fmt.Errorf("PGTEST_BACKEND=%q: want url, docker or local", backend)
	}
	if err != nil {
		if errors.Is(err, pglocal.ErrNoBinaries) {
			err = fmt.Errorf("%w; set TEST_DATABASE_URL to a PostgreSQL server, start a Docker daemon, or install PostgreSQL (apt-get install postgresql)", err)
		}
		return err
	}
	return migrateTemplate(ctx)
}

func startURL() error {
	adminURL = os.Getenv("TEST_DATABASE_URL")
	if adminURL == "" {
		return errors.New("PGTEST_BACKEND=url needs TEST_DATABASE_URL")
	}
	return nil
}

func startLocal(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "lockbank-pgtest-*")
	if err != nil {
		return err
	}
	// The server's OS user (postgres, when we are root) must reach the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	srv, err := pglocal.Start(ctx, pglocal.Options{
		DataDir: dir + "/data",
		// Durability is not under test here; speed is welcome.
		Settings: []string{"fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300"},
	})
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	adminURL = srv.URL("postgres")
	stop = func() {
		_ = srv.Stop(context.Background())
		os.RemoveAll(dir)
	}
	return nil
}

func migrateTemplate(ctx context.Context) error {
	template = fmt.Sprintf("lockbank_template_%d", os.Getpid())
	if err := exec(ctx, "CREATE DATABASE "+pgx.Identifier{template}.Sanitize()); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	prevStop := stop
	stop = func() {
		_ = exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{template}.Sanitize()+" WITH (FORCE)")
		if prevStop != nil {
			prevStop()
		}
	}
	cfg, err := pgx.ParseConfig(withDatabase(adminURL, template))
	if err != nil {
		return err
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	if _, err := migrations.Up(ctx, db); err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	return nil
}

func createFromTemplate(ctx context.Context, name string) error {
	// CREATE DATABASE fails when another backend uses the template at that
	// moment; one at a time from this process, and retry for other processes
	// sharing a TEST_DATABASE_URL server.
	createMu.Lock()
	defer createMu.Unlock()
	var err error
	for range 50 {
		err = exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{template}.Sanitize())
		if err == nil || !strings.Contains(err.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		// A key=value connection string: the last dbname wins.
		return rawURL + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}
