package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/internal/pgtest"
)

// newAPIKey runs `bankd apikey new` as an operator would and returns the key
// and the line for the keys file.
func newAPIKey(t *testing.T, name, role string) (key, line string) {
	t.Helper()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"apikey", "new", "--name", name, "--role", role}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatalf("bankd apikey new: %v", err)
	}
	for l := range strings.SplitSeq(out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "key: "); ok {
			key = v
		}
		if v, ok := strings.CutPrefix(l, "line: "); ok {
			line = v
		}
	}
	if key == "" || line == "" || strings.Contains(line, key) {
		t.Fatalf("bankd apikey new printed %q: want a key and a line without it", out.String())
	}
	return key, line
}

func writeKeysFile(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// call sends one request with key as its Bearer key ("" for none).
func call(t *testing.T, method, url, key, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := checked(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestAPIKeys starts bankd with a keys file made by `bankd apikey new`:
// health stays open, /v1 needs a key, bob's client key cannot touch alice's
// account or lease, the admin's reaches the account, and no key is ever in
// bankd's log.
func TestAPIKeys(t *testing.T) {
	t.Parallel()
	alice, aliceLine := newAPIKey(t, "alice", "client")
	bob, bobLine := newAPIKey(t, "bob", "client")
	ops, opsLine := newAPIKey(t, "ops", "admin")
	file := writeKeysFile(t, "# name role hash", aliceLine, bobLine, opsLine)
	b := startBankd(t, map[string]string{"DATABASE_URL": pgtest.URL(t), "BANKD_API_KEYS_FILE": file})

	if status, _ := call(t, "GET", b.url+"/readyz", "", ""); status != 200 {
		t.Fatalf("readyz without a key: %d", status)
	}
	if status, p := call(t, "POST", b.url+"/v1/accounts", "", `{"owner":"x","balance":1}`); status != 401 || p["code"] != "unauthenticated" {
		t.Fatalf("create without a key: %d %v", status, p)
	}
	status, acct := call(t, "POST", b.url+"/v1/accounts", alice, `{"owner":"alice","balance":1000}`)
	if status != 201 {
		t.Fatalf("alice creates: %d %v", status, acct)
	}
	path := fmt.Sprintf("%s/v1/accounts/%.0f", b.url, acct["id"])
	if status, p := call(t, "POST", path+"/withdrawals", bob, `{"amount":1000}`); status != 404 || p["code"] != "account_not_found" {
		t.Fatalf("bob withdraws from alice's account: %d %v", status, p)
	}
	_, lease := call(t, "POST", b.url+"/v1/locks/job:1", alice, `{"holder":"a","ttl_ms":60000}`)
	if status, p := call(t, "DELETE", b.url+"/v1/locks/job:1", bob, ``, "Lease-Id", fmt.Sprint(lease["lease_id"])); status != 409 || p["code"] != "not_holder" {
		t.Fatalf("bob releases alice's lease: %d %v", status, p)
	}
	if status, p := call(t, "GET", path, ops, ``); status != 200 || p["balance"].(float64) != 1000 {
		t.Fatalf("admin reads alice's account: %d %v", status, p)
	}
	if status, _ := call(t, "DELETE", b.url+"/v1/locks/job:1", alice, ``, "Lease-Id", fmt.Sprint(lease["lease_id"])); status != 204 {
		t.Fatalf("alice releases her lease: %d", status)
	}
	if err := b.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "api_keys=3") || strings.Contains(logs, "without API keys") {
		t.Fatalf("the start log does not say that 3 keys are on:\n%s", logs)
	}
	for _, key := range []string{alice, bob, ops} {
		if strings.Contains(logs, strings.TrimPrefix(key, "lbk_")) {
			t.Fatalf("a key is in bankd's log:\n%s", logs)
		}
	}
}

// TestAPIKeysFileRefused: a bad keys file stops bankd at start, before it
// touches a database, with an error that names the file and the line.
func TestAPIKeysFileRefused(t *testing.T) {
	t.Parallel()
	_, alice := newAPIKey(t, "alice", "client")
	_, other := newAPIKey(t, "alice", "admin")
	tests := []struct {
		name, file, want string
	}{
		{"Malformed", writeKeysFile(t, "# keys", alice, "bob client"), ": line 3: want 3 fields"},
		{"DuplicateName", writeKeysFile(t, alice, other), `: line 2: name "alice" is already on line 1`},
		{"DuplicateHash", writeKeysFile(t, alice, "bob admin "+strings.Fields(alice)[2]), ": line 2: the same hash"},
		{"Empty", writeKeysFile(t, "# no keys yet"), ": no keys"},
		{"Missing", filepath.Join(t.TempDir(), "nothing-here"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A database that never answers: reaching it would take a minute.
			env := map[string]string{"DATABASE_URL": "postgres://x:y@127.0.0.1:1/none?connect_timeout=1", "BANKD_ADDR": "127.0.0.1:0"}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, []string{"--api-keys-file", tt.file}, func(k string) string { return env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.file) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error naming %s and %q", err, tt.file, tt.want)
			}
		})
	}
}

func TestAPIKeyNewRefusesBadArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"apikey"},
		{"apikey", "old"},
		{"apikey", "new"},
		{"apikey", "new", "--name", "alice", "--role", "root"},
		{"apikey", "new", "--name", "al ice"},
		{"apikey", "new", "--name", "alice", "extra"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, io.Discard); err == nil || out.Len() != 0 {
			t.Errorf("bankd %v = %v, printed %q; want an error and nothing printed", args, err, out.String())
		}
	}
}

// TestWarnIfOpen: without keys, bankd warns when it listens beyond this
// machine, and only then.
func TestWarnIfOpen(t *testing.T) {
	t.Parallel()
	keys, err := apikey.Parse(strings.NewReader(func() string { _, l, _ := apikey.New("a", apikey.RoleAdmin); return l }()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ip   string
		keys *apikey.Set
		warn bool
	}{
		{"127.0.0.1", nil, false},
		{"127.0.0.2", nil, false},
		{"::1", nil, false},
		{"0.0.0.0", nil, true},
		{"::", nil, true},
		{"192.0.2.10", nil, true},
		{"0.0.0.0", keys, false},
	} {
		var logs bytes.Buffer
		warnIfOpen(slog.New(slog.NewTextHandler(&logs, nil)), &net.TCPAddr{IP: net.ParseIP(tt.ip), Port: 8080}, tt.keys)
		if got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "--api-keys-file"); got != tt.warn {
			t.Errorf("%s with %d keys: warned %v, want %v: %s", tt.ip, tt.keys.Len(), got, tt.warn, logs.String())
		}
	}
}
