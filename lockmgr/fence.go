package lockmgr

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query in the caller's transaction: a pgx.Tx, or a
// connection on which the caller began a transaction itself (BEGIN in a
// pipeline). Never a pool: outside a transaction the fence's row lock would
// end with its statement.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckFence is the package's CheckFence, counted in m's metrics and, when
// refused, logged with the newest token. A nil m checks without counting, for
// callers that hold no Manager. Errors: as CheckFence.
func (m *Manager) CheckFence(ctx context.Context, tx Querier, resource string, token int64) error {
	if m == nil {
		return CheckFence(ctx, tx, resource, token)
	}
	newest, err := checkFence(ctx, tx, resource, token)
	result := fenceResult(err)
	m.metrics.fenceChecks.WithLabelValues(result).Inc()
	if result != "ok" && result != "error" {
		m.log.Info("fence refused", "resource", resource, "fencing_token", token, "newest_token", newest, "result", result)
	}
	return err
}

// CheckFence verifies, inside the caller's transaction tx and just before its
// write, that token is the newest grant of resource and that this grant is
// live by the database's clock. It locks the lease row (FOR SHARE) until tx
// ends, so no newer grant can come between the check and the write: a
// holder that paused past its lease is rejected however long the pause.
// Errors: ErrStaleToken, ErrLeaseExpired, ErrTokenMismatch; when the
// database fails, ErrBusy or ErrUnavailable (the caller's transaction is
// then aborted, and nothing it did committed).
func CheckFence(ctx context.Context, tx Querier, resource string, token int64) error {
	_, err := checkFence(ctx, tx, resource, token)
	return err
}

// checkFence is CheckFence, also returning the newest token of resource (0
// when none is known).
func checkFence(ctx context.Context, tx Querier, resource string, token int64) (newest int64, err error) {
	var (
		current int64
		live    bool
	)
	err = tx.QueryRow(ctx, sqlFence, resource).Scan(&current, &live)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, ErrTokenMismatch
	case err != nil:
		return 0, dbError("fence", resource, err, false)
	case token == current && live:
		return current, nil
	case token == current:
		return current, ErrLeaseExpired
	case token > current:
		return current, ErrTokenMismatch
	}
	var issued bool
	if err := tx.QueryRow(ctx, sqlTokenIssuedFor, token, resource).Scan(&issued); err != nil {
		return current, dbError("fence", resource, err, false)
	}
	if !issued {
		return current, ErrTokenMismatch
	}
	return current, ErrStaleToken
}
