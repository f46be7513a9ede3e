package account_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/account"
)

// TestCheckKey: an account opened by alice's key passes CheckKey for alice
// only; for bob, for a key of no name, and for an account opened with keys
// off, the answer is the one a missing account gets, word for word.
func TestCheckKey(t *testing.T) {
	t.Parallel()
	svc, b := setup(t, account.Options{})
	opened, err := svc.CreateForKey(b.ctx, "alice", "Alice", 100)
	if err != nil {
		t.Fatal(err)
	}
	if opened.KeyName != "alice" {
		t.Fatalf("KeyName %q, want alice", opened.KeyName)
	}
	if got, err := svc.Get(b.ctx, opened.ID); err != nil || got.KeyName != "alice" {
		t.Fatalf("Get: KeyName %q (%v), want alice", got.KeyName, err)
	}
	keyless := mustCreate(t, svc, 100)
	if keyless.KeyName != "" {
		t.Fatalf("an account opened with keys off has KeyName %q", keyless.KeyName)
	}

	if err := svc.CheckKey(b.ctx, opened.ID, "alice"); err != nil {
		t.Fatalf("alice on her account: %v", err)
	}
	const missing = 999_999
	missingErr := svc.CheckKey(b.ctx, missing, "alice")
	if account.ErrorCode(missingErr) != account.CodeAccountNotFound {
		t.Fatalf("a missing account: %v, want %s", missingErr, account.CodeAccountNotFound)
	}
	for _, tt := range []struct {
		name string
		id   int64
		key  string
	}{
		{"OtherKey", opened.ID, "bob"},
		{"NoKeyName", opened.ID, ""},
		{"OpenedWithKeysOff", keyless.ID, "alice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := svc.CheckKey(b.ctx, tt.id, tt.key)
			want := strings.ReplaceAll(missingErr.Error(), "999999", strconv.FormatInt(tt.id, 10))
			if err == nil || err.Error() != want {
				t.Fatalf("CheckKey = %v, want exactly %q", err, want)
			}
		})
	}
}

// TestLeaseAccount: only a resource spelled exactly as LeaseResource spells
// it names an account's lease.
func TestLeaseAccount(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		resource string
		id       int64
		ok       bool
	}{
		{account.LeaseResource(7), 7, true},
		{"account:9223372036854775807", 9223372036854775807, true},
		{"account:007", 0, false},
		{"account:+7", 0, false},
		{"account:0", 0, false},
		{"account:-1", 0, false},
		{"account:", 0, false},
		{"account:x", 0, false},
		{"accounts:7", 0, false},
		{"account:99999999999999999999", 0, false},
		{"printer:7", 0, false},
	} {
		if id, ok := account.LeaseAccount(tt.resource); id != tt.id || ok != tt.ok {
			t.Errorf("LeaseAccount(%q) = %d %v, want %d %v", tt.resource, id, ok, tt.id, tt.ok)
		}
	}
}
