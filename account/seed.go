package account

import (
	"context"
	"slices"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/text"
)

// MaxSeed is the most accounts one CreateMany opens.
const MaxSeed = 1_000_000

// CreateMany opens n accounts (1–MaxSeed) for owner, each with the same
// opening balance, in one statement, and returns their ids in ascending
// order: seeding for load tests and demonstrations, where opening them one
// by one would take longer than what uses them. owner and openingBalance
// are checked as Create checks them. Errors: CodeInvalidRequest,
// CodeInvalidAmount.
func (s *Service) CreateMany(ctx context.Context, owner string, openingBalance int64, n int) ([]int64, error) {
	if err := checkNewAccount(owner, openingBalance); err != nil {
		return nil, err
	}
	if n < 1 || n > MaxSeed {
		return nil, errorf(CodeInvalidRequest, "the number of accounts must be from 1 to %d", MaxSeed)
	}
	rows, _ := s.pool.Query(ctx, sqlCreateAccounts, owner, openingBalance, n)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, wrap("create accounts", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// checkNewAccount is what Create and CreateMany ask of a new account:
// owner 1–100 characters of text (package internal/text), an opening
// balance of 0–MaxAmount.
func checkNewAccount(owner string, openingBalance int64) error {
	if err := text.Check(owner); err != nil {
		return errorf(CodeInvalidRequest, "owner %v: it must be text, without control, format or line-separator characters", err)
	}
	if n := utf8.RuneCountInString(owner); n < 1 || n > 100 {
		return errorf(CodeInvalidRequest, "owner must be 1 to 100 characters")
	}
	if openingBalance < 0 || openingBalance > MaxAmount {
		return errorf(CodeInvalidAmount, "balance must be between 0 and %d", int64(MaxAmount))
	}
	return nil
}
