package live

import (
	"context"
	"time"
)

// Refusal is a change bankd refused for a business reason: it commits
// nothing, so no trigger sees it, and the node that refused writes it.
type Refusal struct {
	Kind      string // deposit or withdrawal
	AccountID int64
	Code      string // insufficient_funds, stale_fencing_token, lease_expired, fencing_token_mismatch
	Token     int64  // the refused fencing token; 0 for none
	Amount    int64  // 0 when unknown
	Strategy  string
	Detail    string
}

// The node column takes its default: this session's application_name.
const sqlInsertRefusal = `
INSERT INTO live_events (kind, account_id, resource, code, token, amount, strategy, detail)
VALUES ('refused', $1::bigint, 'account:' || $1::bigint, $2::text, nullif($3::bigint, 0), nullif($4::bigint, 0),
        nullif($5::text, ''), $6::text || ': ' || $7::text)`

// Refused writes r to the timeline. It is best effort, bounded to a second
// and detached from the request (whose client may be gone): the refusal
// itself has been answered already, and a lost line costs nothing else.
func (l *Live) Refused(ctx context.Context, r Refusal) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if _, err := l.pool.Exec(ctx, sqlInsertRefusal, r.AccountID, r.Code, r.Token, r.Amount, r.Strategy, r.Kind, r.Detail); err != nil {
		l.log.Warn("live: writing a refusal", "err", err, "account", r.AccountID, "code", r.Code)
	}
}
