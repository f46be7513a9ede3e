package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/lockmgr"
	"github.com/lockbank/lockbank/migrations"
)

// bankd behind a pooler in transaction mode (PgBouncer, --pooler): each
// transaction may run on another server connection, so bankd keeps nothing
// in a session between transactions.
//
//	session state          without --pooler               with --pooler
//	prepared statements    pgx's cache (cache_statement)   none (exec), or the URL's default_query_exec_mode
//	lock_timeout, idle_…   given at connect                SET LOCAL in each transaction bankd opens
//	LISTEN, waiters' locks the pool's URL                  --listen-database-url, else none: wake at expiry
//	migrations' lock       session advisory lock           same, on the direct URL; else a lock table
//
// Everything else was already transaction-scoped: lockmgr's release sets
// synchronous_commit with set_config(…, true) and takes its advisory lock
// with pg_try_advisory_xact_lock; no temporary tables anywhere.

// database is bankd's pool and, when there is one, its direct connection.
type database struct {
	pool   *pgxpool.Pool
	direct *pgx.ConnConfig // nil: none (--pooler without --listen-database-url, or "none")
	pooled bool
}

// noPreparedStatements makes the pool prepare nothing on the server, unless
// url chose a mode itself (default_query_exec_mode, which pgx reads from the
// URL): a statement prepared in one transaction would be missing, or
// already exist, on the server connection of the next.
func noPreparedStatements(pcfg *pgxpool.Config, url string) {
	if !strings.Contains(url, "default_query_exec_mode") {
		pcfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
}

// directConfig is the connection for LISTEN, the waiters' registration and
// the migrations' lock: --listen-database-url, or url itself when no pooler
// stands between; nil when there is none.
func directConfig(cfg config, url string) (*pgx.ConnConfig, error) {
	listen := cfg.listenURL
	switch {
	case listen == "none":
		return nil, nil
	case listen == "" && cfg.pooler:
		return nil, nil
	case listen == "":
		listen = url
	}
	c, err := pgx.ParseConfig(listen)
	if err != nil {
		return nil, fmt.Errorf("listen database url: %w", err)
	}
	c.ConnectTimeout = 3 * time.Second
	c.RuntimeParams["application_name"] = "bankd " + cfg.nodeName + " listen"
	return c, nil
}

// lockOptions tells lockmgr where to LISTEN.
func (d *database) lockOptions(logger *slog.Logger) lockmgr.Options {
	return lockmgr.Options{Logger: logger, Listen: d.direct, NoListen: d.direct == nil}
}

// txTimeouts are the timeouts account sets in each transaction: only behind
// a pooler, where they cannot be given at connect.
func (d *database) txTimeouts(cfg config) account.TxTimeouts {
	if !d.pooled {
		return account.TxTimeouts{}
	}
	return account.TxTimeouts{Lock: cfg.lockTimeout, IdleInTransaction: cfg.rowLockTTL}
}

// migrations returns the goose provider: on the direct connection when
// there is one (its session advisory lock needs one session), else through
// the pool with a lock table, which needs none.
func (d *database) migrations() (*goose.Provider, func(), error) {
	var db *sql.DB
	if d.direct != nil {
		db = stdlib.OpenDB(*d.direct)
	} else {
		db = stdlib.OpenDBFromPool(d.pool)
	}
	newProvider := migrations.NewProvider
	if d.direct == nil {
		newProvider = migrations.NewPooledProvider
	}
	p, err := newProvider(db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return p, func() { db.Close() }, nil
}

// checkPooledTimeouts warns when, behind a pooler, a statement outside
// bankd's own transactions (a lone change, a lock grant) would wait for a
// row lock without bound: bankd cannot set the session's timeouts there, the
// server's defaults for its role must (ALTER ROLE … SET lock_timeout, or the
// pooler's connect_query). Such a wait still ends with the transaction that
// holds the lock, which bankd bounds.
func (d *database) checkPooledTimeouts(ctx context.Context, logger *slog.Logger) {
	if !d.pooled {
		return
	}
	var lockTimeout, idle string
	err := d.pool.QueryRow(ctx, `SELECT current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')`).Scan(&lockTimeout, &idle)
	switch {
	case err != nil:
		logger.Warn("behind a pooler: could not read the server's default timeouts", "err", err)
	case lockTimeout == "0" || idle == "0":
		logger.Warn("behind a pooler: bankd sets lock_timeout and idle_in_transaction_session_timeout in its own transactions only; "+
			"single statements get the server's defaults, which are unbounded: set them for bankd's role (ALTER ROLE … SET) or in the pooler's connect_query",
			"lock_timeout", lockTimeout, "idle_in_transaction_session_timeout", idle)
	}
}
