package account

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lockbank/lockbank/internal/text"
	"github.com/lockbank/lockbank/lockmgr"
)

// MaxAmount is the largest amount of one deposit, withdrawal or opening
// balance, in minor units (10^15).
const MaxAmount = 1_000_000_000_000_000

// MaxHold is the longest demo pause between reading and writing a balance.
const MaxHold = 30 * time.Second

// Account is one bank account. Amounts are in minor units (paise, cents).
type Account struct {
	ID             int64     `json:"id"`
	Owner          string    `json:"owner"`
	Balance        int64     `json:"balance"`
	OpeningBalance int64     `json:"opening_balance"`
	Currency       string    `json:"currency"`
	FenceToken     int64     `json:"fence_token"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
	// KeyName names the API key that opened the account ("" when opened with
	// keys off). Written once, never changed (migration 00006 enforces it).
	KeyName string `json:"-"`
}

// Entry is one line of an account's ledger: a deposit or a withdrawal and the
// balance right after it.
type Entry struct {
	ID             int64     `json:"id"`
	AccountID      int64     `json:"account_id"`
	Kind           string    `json:"kind"`
	Amount         int64     `json:"amount"`
	Balance        int64     `json:"balance"`
	Strategy       string    `json:"strategy"`
	FenceToken     *int64    `json:"fence_token"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
}

// Entry kinds.
const (
	KindDeposit    = "deposit"
	KindWithdrawal = "withdrawal"
)

// Options configure a Service.
type Options struct {
	// UnsafeDemo enables the unsafe and lease-nofence strategies and Hold:
	// demonstrations of the race, never for real money.
	UnsafeDemo bool
	// Locks grants the leases of the lease strategies; without it they are
	// refused as unknown.
	Locks *lockmgr.Manager
	// Node is the lease holder's name: this process.
	Node string
	// LeaseTTL is the lifetime of the lease a lease withdrawal takes
	// (default 5 s); LeaseWait how long it may wait for it (default 5 s).
	LeaseTTL, LeaseWait time.Duration
	// AutoTTL, when set, gives the lease strategies' leases a TTL learned
	// from their recent critical sections instead of LeaseTTL, and keeps
	// each lease alive (lockmgr.KeepAlive) while its work lasts.
	AutoTTL *lockmgr.AutoTTL
	// TxTimeouts, when set, are made transaction-local (SET LOCAL) in every
	// transaction the Service opens, for a pool behind a pooler in
	// transaction mode (PgBouncer), where a session setting given at
	// connect would be refused or land on whichever server connection the
	// pooler opened. Zero: the session's own settings (bankd gives them at
	// connect when there is no pooler).
	TxTimeouts TxTimeouts
}

// TxTimeouts bound the locks of one transaction (invariant 10).
type TxTimeouts struct {
	// Lock is lock_timeout: the longest wait for a row lock.
	Lock time.Duration
	// IdleInTransaction is idle_in_transaction_session_timeout: how long
	// the transaction may sit idle holding its locks before PostgreSQL ends
	// its session.
	IdleInTransaction time.Duration
}

func (t TxTimeouts) set() bool { return t.Lock > 0 || t.IdleInTransaction > 0 }

// args are sqlSetTxTimeouts' parameters: the settings in milliseconds, and
// the session's own value for a timeout that is not set.
func (t TxTimeouts) args() []any {
	ms := func(d time.Duration) *string {
		if d <= 0 {
			return nil
		}
		v := strconv.FormatInt(d.Milliseconds(), 10)
		return &v
	}
	return []any{ms(t.Lock), ms(t.IdleInTransaction)}
}

// Service reads and changes accounts in PostgreSQL.
type Service struct {
	pool       *pgxpool.Pool
	unsafeDemo bool
	locks      *lockmgr.Manager
	node       string
	leaseTTL   time.Duration
	leaseWait  time.Duration
	txTimeouts TxTimeouts
	autoTTL    *lockmgr.AutoTTL
	sticky     stickyLeases
	combine    combiner
	metrics    *Metrics
}

// NewService returns a Service on pool, whose database must be migrated.
func NewService(pool *pgxpool.Pool, opts Options) *Service {
	s := &Service{pool: pool, unsafeDemo: opts.UnsafeDemo, locks: opts.Locks, node: opts.Node,
		leaseTTL: opts.LeaseTTL, leaseWait: opts.LeaseWait, txTimeouts: opts.TxTimeouts, autoTTL: opts.AutoTTL, combine: combiner{queues: map[queueKey][]*pending{}},
		metrics: newMetrics()}
	if s.leaseTTL == 0 {
		s.leaseTTL = 5 * time.Second
	}
	if s.leaseWait == 0 {
		s.leaseWait = 5 * time.Second
	}
	if s.node == "" {
		s.node = "bankd"
	}
	return s
}

// LeaseResourcePrefix begins the name of every account's lock in the lease
// table. Those rows are kept (lockmgr's Prune is told so): there is one per
// account that ever took a lease, and accounts are kept forever.
const LeaseResourcePrefix = "account:"

// LeaseResource names the lock of account id in the lease table.
func LeaseResource(id int64) string { return LeaseResourcePrefix + strconv.FormatInt(id, 10) }

// LeaseAccount is the inverse of LeaseResource: the account whose lock
// resource is, if it is one (exactly as LeaseResource spells it).
func LeaseAccount(resource string) (id int64, ok bool) {
	digits, found := strings.CutPrefix(resource, "account:")
	if !found {
		return 0, false
	}
	id, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || id <= 0 || LeaseResource(id) != resource {
		return 0, false
	}
	return id, true
}

// Create opens an account for owner (1–100 characters of text, see package
// internal/text; kept exactly as given, spaces included) with an opening
// balance of 0–MaxAmount. Errors: CodeInvalidRequest, CodeInvalidAmount.
func (s *Service) Create(ctx context.Context, owner string, openingBalance int64) (Account, error) {
	return s.CreateForKey(ctx, "", owner, openingBalance)
}

// CreateForKey is Create by the API key named keyName ("" for none), which
// the account keeps as its KeyName for CheckKey. Errors: CodeInvalidRequest,
// CodeInvalidAmount, and the database failures (package comment).
func (s *Service) CreateForKey(ctx context.Context, keyName, owner string, openingBalance int64) (Account, error) {
	if err := text.Check(owner); err != nil {
		return Account{}, errorf(CodeInvalidRequest, "owner %v: it must be text, without control, format or line-separator characters", err)
	}
	if n := utf8.RuneCountInString(owner); n < 1 || n > 100 {
		return Account{}, errorf(CodeInvalidRequest, "owner must be 1 to 100 characters")
	}
	if openingBalance < 0 || openingBalance > MaxAmount {
		return Account{}, errorf(CodeInvalidAmount, "balance must be between 0 and %d", int64(MaxAmount))
	}
	var key *string
	if keyName != "" {
		key = &keyName
	}
	rows, _ := s.pool.Query(ctx, sqlCreateAccount, owner, openingBalance, key)
	a, err := pgx.CollectExactlyOneRow(rows, scanAccount)
	if err != nil {
		return Account{}, wrapLone("create account", err)
	}
	return a, nil
}

// Get returns account id. Errors: CodeAccountNotFound, and the database
// failures (package comment).
func (s *Service) Get(ctx context.Context, id int64) (Account, error) {
	rows, _ := s.pool.Query(ctx, sqlGetAccount, id)
	a, err := pgx.CollectExactlyOneRow(rows, scanAccount)
	if errors.Is(err, pgx.ErrNoRows) {
		return Account{}, notFound(id)
	}
	if err != nil {
		return Account{}, wrap("get account", err)
	}
	return a, nil
}

// CheckKey returns nil when account id was opened by the API key named
// keyName. An account that does not exist, was opened by another key, or by
// none, is CodeAccountNotFound in the very words of a missing account, so
// that a key cannot learn which accounts others have. A key name never
// changes once written, so checking before a change's own transaction is as
// good as checking inside it. Errors: CodeAccountNotFound.
func (s *Service) CheckKey(ctx context.Context, id int64, keyName string) error {
	var opened bool
	err := s.pool.QueryRow(ctx, sqlOpenedByKey, id, keyName).Scan(&opened)
	switch {
	case errors.Is(err, pgx.ErrNoRows), err == nil && !opened:
		return notFound(id)
	case err != nil:
		return wrap("check key", err)
	}
	return nil
}

// Ledger returns up to limit entries of account id with an id above after,
// oldest first, read in one snapshot. Errors: CodeAccountNotFound, and the
// database failures (package comment).
func (s *Service) Ledger(ctx context.Context, id, after int64, limit int) ([]Entry, error) {
	var entries []Entry
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, sqlAccountExists, id).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return notFound(id)
		}
		rows, _ := tx.Query(ctx, sqlLedger, id, after, limit)
		var err error
		entries, err = pgx.CollectRows(rows, scanEntry)
		return err
	})
	if err != nil {
		return nil, wrap("ledger", err)
	}
	return entries, nil
}

func notFound(id int64) *Error {
	return errorf(CodeAccountNotFound, "account %d does not exist", id)
}

func scanAccount(row pgx.CollectableRow) (Account, error) {
	var a Account
	var key *string
	err := row.Scan(&a.ID, &a.Owner, &a.Balance, &a.OpeningBalance, &a.Currency, &a.FenceToken, &a.CreatedAt, &a.UpdatedAt, &key)
	if key != nil {
		a.KeyName = *key
	}
	return a, err
}

func scanEntry(row pgx.CollectableRow) (Entry, error) {
	var e Entry
	var key *string
	err := row.Scan(&e.ID, &e.AccountID, &e.Kind, &e.Amount, &e.Balance, &e.Strategy, &e.FenceToken, &key, &e.CreatedAt)
	if key != nil {
		e.IdempotencyKey = *key
	}
	return e, err
}
