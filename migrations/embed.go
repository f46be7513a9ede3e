// Package migrations holds lockbank's database schema as goose SQL migrations,
// embedded into every binary so that a bankd replica can bring any database up
// to date at start.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// FS contains the numbered goose SQL files.
//
//go:embed *.sql
var FS embed.FS

// NewProvider returns a goose provider for db that serialises itself with a
// PostgreSQL session advisory lock, so that several replicas starting at once
// apply each migration exactly once.
func NewProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("migrations: session locker: %w", err)
	}
	return goose.NewProvider(goose.DialectPostgres, db, FS, goose.WithSessionLocker(locker))
}

// NewPooledProvider is NewProvider for a db that reaches PostgreSQL only
// through a pooler in transaction mode, where a session advisory lock would
// land on one server connection and its unlock on another: it serialises
// itself with goose's lock table (goose_lock, one row, its lease renewed
// while migrating) instead.
func NewPooledProvider(db *sql.DB) (*goose.Provider, error) {
	locker, err := lock.NewPostgresTableLocker()
	if err != nil {
		return nil, fmt.Errorf("migrations: table locker: %w", err)
	}
	return goose.NewProvider(goose.DialectPostgres, db, FS, goose.WithLocker(locker))
}

// Up applies every pending migration.
func Up(ctx context.Context, db *sql.DB) ([]*goose.MigrationResult, error) {
	p, err := NewProvider(db)
	if err != nil {
		return nil, err
	}
	return p.Up(ctx)
}
