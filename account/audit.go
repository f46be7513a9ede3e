package account

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Audit checks invariant 1 for the accounts ids, in one snapshot: it
// returns, in ascending order, those whose balance is not their opening
// balance plus the deposits minus the withdrawals of their ledger (none
// when all is well; ids of no account are not reported). A negative balance
// cannot be stored (the accounts table's CHECK). It only reads, takes no
// lock and waits for none: a check for after a load test or a fault
// injection, not for the path of a change.
func (s *Service) Audit(ctx context.Context, ids []int64) ([]int64, error) {
	rows, _ := s.pool.Query(ctx, sqlAudit, ids)
	bad, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, wrap("audit", err)
	}
	return bad, nil
}
