package live

import (
	"context"
	"encoding/json"
	"time"
)

// Snapshot is the state the page draws, read in one statement so that its
// parts and DBNow agree: the page counts every lease down from DBNow, the
// database's clock, never the browser's.
type Snapshot struct {
	DBNow       time.Time       `json:"db_now"`
	UnsafeDemo  bool            `json:"unsafe_demo"`
	LeaseTTLMS  int64           `json:"lease_ttl_ms"` // the lease a node's lease withdrawal takes
	LastEventID int64           `json:"last_event_id"`
	Nodes       json.RawMessage `json:"nodes"`    // [{name, connections}]: bankd sessions on the database, by node
	Accounts    json.RawMessage `json:"accounts"` // the newest accounts with the tail of their ledgers
	Leases      json.RawMessage `json:"leases"`   // every live lease
}

// How much a snapshot shows.
const (
	snapshotAccounts = 12
	ledgerTail       = 6
	snapshotLeases   = 50
)

// The nodes are the bankd processes with a session on this database (bankd
// names its sessions "bankd NODE"): a node that died leaves the list when
// its connections close. The lease list reads no row lock and takes none.
const sqlSnapshot = `
SELECT clock_timestamp(),
       (SELECT coalesce(max(id), 0) FROM live_events),
       (SELECT coalesce(json_agg(n ORDER BY n.name), '[]')
        FROM (SELECT substring(application_name FROM '^bankd (.*)$') AS name, count(*) AS connections
              FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'bankd %'
              GROUP BY 1) n),
       (SELECT coalesce(json_agg(a ORDER BY a.id DESC), '[]')
        FROM (SELECT acc.id, acc.owner, acc.balance, acc.opening_balance, acc.currency, acc.fence_token,
                     (SELECT coalesce(json_agg(e ORDER BY e.id), '[]')
                      FROM (SELECT id, kind, amount, balance_after, strategy, fence_token, created_at
                            FROM ledger_entries WHERE account_id = acc.id
                            ORDER BY id DESC LIMIT $2) e) AS ledger,
                     (SELECT count(*) FROM ledger_entries WHERE account_id = acc.id) AS entries
              FROM accounts acc ORDER BY acc.id DESC LIMIT $1) a),
       (SELECT coalesce(json_agg(l ORDER BY l.expires_at), '[]')
        FROM (SELECT resource, holder, token, acquired_at, expires_at, ttl_ms
              FROM leases WHERE expires_at > clock_timestamp()
              ORDER BY expires_at LIMIT $3) l)`

// ReadSnapshot reads the page's state.
func (l *Live) ReadSnapshot(ctx context.Context) (Snapshot, error) {
	s := Snapshot{UnsafeDemo: l.opts.UnsafeDemo, LeaseTTLMS: l.opts.LeaseTTL.Milliseconds()}
	err := l.pool.QueryRow(ctx, sqlSnapshot, snapshotAccounts, ledgerTail, snapshotLeases).
		Scan(&s.DBNow, &s.LastEventID, &s.Nodes, &s.Accounts, &s.Leases)
	return s, err
}
