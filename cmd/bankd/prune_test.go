package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lockbank/lockbank/internal/pgtest"
	"github.com/lockbank/lockbank/internal/wait"
)

// TestRetentionConfig: the retentions and the pruning interval have their
// defaults, come from the environment, and a flag wins over it.
func TestRetentionConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                           string
		args                           []string
		env                            map[string]string
		idempotency, lease, pruneEvery time.Duration
	}{
		{"Defaults", nil, nil, 24 * time.Hour, time.Hour, time.Minute},
		{"Environment", nil, map[string]string{"BANKD_IDEMPOTENCY_RETENTION": "48h", "BANKD_LEASE_RETENTION": "2h", "BANKD_PRUNE_INTERVAL": "30s"},
			48 * time.Hour, 2 * time.Hour, 30 * time.Second},
		{"FlagsWin", []string{"--idempotency-retention", "1h", "--lease-retention", "1m", "--prune-interval", "100ms"},
			map[string]string{"BANKD_IDEMPOTENCY_RETENTION": "48h", "BANKD_LEASE_RETENTION": "2h", "BANKD_PRUNE_INTERVAL": "30s"},
			time.Hour, time.Minute, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.idempotencyRetention != tt.idempotency || cfg.leaseRetention != tt.lease || cfg.pruneInterval != tt.pruneEvery {
				t.Fatalf("idempotency %s, lease %s, every %s; want %s, %s, %s", cfg.idempotencyRetention, cfg.leaseRetention,
					cfg.pruneInterval, tt.idempotency, tt.lease, tt.pruneEvery)
			}
		})
	}
}

// TestRetentionConfigErrors: a retention or interval out of range, or an
// unreadable environment variable, is refused by the configuration (and so
// stops bankd before it starts: run returns parseConfig's error).
func TestRetentionConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"IdempotencyRetentionTooShort", []string{"--idempotency-retention", "59s"}, nil, "--idempotency-retention"},
		{"IdempotencyRetentionTooLong", []string{"--idempotency-retention", "87601h"}, nil, "--idempotency-retention"},
		{"IdempotencyRetentionEnv", nil, map[string]string{"BANKD_IDEMPOTENCY_RETENTION": "a day"}, "BANKD_IDEMPOTENCY_RETENTION"},
		{"LeaseRetentionTooShort", []string{"--lease-retention", "0s"}, nil, "--lease-retention"},
		{"LeaseRetentionNegative", nil, map[string]string{"BANKD_LEASE_RETENTION": "-1h"}, "--lease-retention"},
		{"LeaseRetentionEnv", nil, map[string]string{"BANKD_LEASE_RETENTION": "1"}, "BANKD_LEASE_RETENTION"},
		{"PruneIntervalTooShort", []string{"--prune-interval", "10ms"}, nil, "--prune-interval"},
		{"PruneIntervalTooLong", []string{"--prune-interval", "2h"}, nil, "--prune-interval"},
		{"PruneIntervalEnv", nil, map[string]string{"BANKD_PRUNE_INTERVAL": "often"}, "BANKD_PRUNE_INTERVAL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseConfig(%v) = %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}

// send makes a request with headers and returns the status, the
// Idempotent-Replayed header and the decoded body.
func send(t *testing.T, method, url, body string, headers map[string]string) (status int, replayed bool, m map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := checked(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, resp.Header.Get("Idempotent-Replayed") == "true", m
}

// TestPrunerRuns: a running bankd deletes the idempotency records and lease
// history that outlived their retentions, and nothing else: a key past its
// retention is new again, one within it still replays, and the account's
// lease row stays. It stops with bankd.
func TestPrunerRuns(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": pgtest.URL(t)}
	b := startBankd(t, env, "--prune-interval", "100ms")
	ctx := context.Background()
	db, err := pgx.Connect(ctx, env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })

	_, _, acct := send(t, "POST", b.url+"/v1/accounts", `{"owner":"alice","balance":1000}`, nil)
	path := fmt.Sprintf("%s/v1/accounts/%.0f", b.url, acct["id"])
	deposit := func(key string) (int, bool, map[string]any) {
		return send(t, "POST", path+"/deposits", `{"amount":10}`, map[string]string{"Idempotency-Key": key})
	}
	_, _, first := deposit("old")
	deposit("fresh")
	if status, _, _ := send(t, "POST", path+"/withdrawals", `{"amount":1,"strategy":"lease"}`, nil); status != 201 {
		t.Fatalf("lease withdrawal: %d", status)
	}
	status, _, lock := send(t, "POST", b.url+"/v1/locks/job:old", `{"holder":"worker","ttl_ms":1000}`, nil)
	if status != 201 {
		t.Fatalf("lock: %d %v", status, lock)
	}
	if status, _, _ := send(t, "DELETE", b.url+"/v1/locks/job:old", "", map[string]string{"Lease-Id": lock["lease_id"].(string)}); status != 204 {
		t.Fatalf("unlock: %d", status)
	}
	// Everything but the fresh key happened long ago.
	for _, q := range []string{
		`UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE key = 'old'`,
		`UPDATE leases SET acquired_at = acquired_at - interval '2 hours', expires_at = expires_at - interval '2 hours'`,
		`UPDATE lease_grants SET granted_at = granted_at - interval '2 hours'`,
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	// Left: the fresh key, the account's lease row and its grant (its newest).
	var keys, leases, grants int
	wait.Until(t, 30*time.Second, "the pruner to leave 1 idempotency record, 1 lease row, 1 grant", func() bool {
		err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM idempotency_keys), (SELECT count(*) FROM leases),
			(SELECT count(*) FROM lease_grants)`).Scan(&keys, &leases, &grants)
		return err == nil && keys == 1 && leases == 1 && grants == 1
	})
	var kept string
	if err := db.QueryRow(ctx, `SELECT resource FROM leases`).Scan(&kept); err != nil || !strings.HasPrefix(kept, "account:") {
		t.Fatalf("the lease row left is %q (%v); want the account's", kept, err)
	}
	if status, replayed, _ := deposit("fresh"); status != 201 || !replayed {
		t.Fatalf("retry within the retention: %d replayed=%v; want 201 replayed", status, replayed)
	}
	status, replayed, again := deposit("old")
	if status != 201 || replayed || again["id"] == first["id"] {
		t.Fatalf("the key after its retention: %d replayed=%v entry %v (first %v); want a new entry", status, replayed, again["id"], first["id"])
	}
	if _, _, got := send(t, "GET", path, "", nil); got["balance"].(float64) != 1029 {
		t.Fatalf("balance %v, want 1029 (+10 +10 -1 +10)", got["balance"])
	}
	if err := b.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	logged := false
	for _, line := range strings.Split(b.logs.String(), "\n") {
		logged = logged || strings.Contains(line, "level=INFO msg=pruned") && strings.Contains(line, "idempotency_keys=1")
	}
	if !logged {
		t.Fatalf("no info line for the pruned record:\n%s", b.logs)
	}
}
