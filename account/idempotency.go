package account

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ValidateIdempotencyKey accepts "" (no key) or 1–255 printable ASCII characters.
// Errors: CodeInvalidIdempotencyKey.
func ValidateIdempotencyKey(key string) error {
	if len(key) > 255 {
		return errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be at most 255 characters")
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return errorf(CodeInvalidIdempotencyKey, "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

// requestHash identifies what a request asked for, so a key reused for a
// different request is caught. Strategy, hold and fencing token are part of
// the request.
func requestHash(kind string, c Change) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "v1|%s|%d|%s|%d|%d", kind, c.Amount, c.Strategy, c.Hold.Milliseconds(), c.FenceToken))
	return hex.EncodeToString(sum[:])
}

func hashIfKeyed(c Change, hash string) string {
	if c.IdempotencyKey == "" {
		return ""
	}
	return hash
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type storedOutcome struct {
	Result
	refusal *Error
}

// replay looks up the first outcome stored for key. found is false when the
// key is new; a key stored for a different request is CodeIdempotencyKeyReused.
func replay(ctx context.Context, tx pgx.Tx, accountID int64, key, hash string) (storedOutcome, bool, error) {
	var (
		storedHash    string
		entryID       *int64
		code, message *string
	)
	err := tx.QueryRow(ctx, sqlGetIdempotency, accountID, key).Scan(&storedHash, &entryID, &code, &message)
	if errors.Is(err, pgx.ErrNoRows) {
		return storedOutcome{}, false, nil
	}
	if err != nil {
		return storedOutcome{}, false, err
	}
	if storedHash != hash {
		return storedOutcome{}, true, errorf(CodeIdempotencyKeyReused,
			"Idempotency-Key %q was already used for a different request on this account", key)
	}
	out := storedOutcome{Result: Result{Replayed: true}}
	if entryID == nil {
		out.refusal = &Error{Code: *code, Message: *message}
		return out, true, nil
	}
	rows, _ := tx.Query(ctx, sqlGetEntry, *entryID)
	out.Entry, err = pgx.CollectExactlyOneRow(rows, scanEntry)
	return out, true, err
}

// remember stores the outcome of a keyed change in the change's transaction,
// so the outcome and the change commit or vanish together.
func remember(ctx context.Context, tx pgx.Tx, c Change, hash string, entryID *int64, refusal *Error) error {
	if c.IdempotencyKey == "" {
		return nil
	}
	var code, message *string
	if refusal != nil {
		code, message = &refusal.Code, &refusal.Message
	}
	_, err := tx.Exec(ctx, sqlInsertIdempotency, c.AccountID, c.IdempotencyKey, hash, entryID, code, message)
	return err
}

type storedResult struct {
	storedOutcome
	hash string
}

// scanStored reads the stored outcomes of a batch's idempotency keys.
func scanStored(br pgx.BatchResults) (map[string]*storedResult, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[string]*storedResult{}
	for rows.Next() {
		var (
			key           string
			r             storedResult
			entryID       *int64
			code, message *string
		)
		if err := rows.Scan(&key, &r.hash, &entryID, &code, &message); err != nil {
			return nil, err
		}
		r.Replayed = true
		if entryID == nil {
			r.refusal = &Error{Code: *code, Message: *message}
		} else {
			r.Entry.ID = *entryID
		}
		stored[key] = &r
	}
	return stored, rows.Err()
}

// loadStoredEntries fills in the entries of stored successes, for replay.
func loadStoredEntries(ctx context.Context, conn *pgxpool.Conn, stored map[string]*storedResult) error {
	byID := map[int64]*storedResult{}
	var ids []int64
	for _, r := range stored {
		if r.refusal == nil {
			byID[r.Entry.ID] = r
			ids = append(ids, r.Entry.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	rows, _ := conn.Query(ctx, sqlGetEntries, ids)
	entries, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return err
	}
	for _, e := range entries {
		byID[e.ID].Entry = e
	}
	return nil
}
