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

// Up applies every pending migration.
func Up(ctx context.Context, db *sql.DB) ([]*goose.MigrationResult, error) {
	p, err := NewProvider(db)
	if err != nil {
		return nil, err
	}
	return p.Up(ctx)
}
