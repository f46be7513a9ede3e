package apikey_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/apikey"
)

func newKey(t *testing.T, name string, role apikey.Role) (secret, line string) {
	t.Helper()
	secret, line, err := apikey.New(name, role)
	if err != nil {
		t.Fatal(err)
	}
	return secret, line
}

// TestNewKeyIsRecognised: the line New prints lets a Set recognise exactly
// its key, with its name and role, and no other key.
func TestNewKeyIsRecognised(t *testing.T) {
	t.Parallel()
	alice, aliceLine := newKey(t, "alice", apikey.RoleClient)
	ops, opsLine := newKey(t, "ops", apikey.RoleAdmin)
	stranger, _ := newKey(t, "alice", apikey.RoleClient)
	if strings.Contains(aliceLine, alice) || strings.Contains(aliceLine, strings.TrimPrefix(alice, "lbk_")) {
		t.Fatalf("the file line %q holds the key itself", aliceLine)
	}
	set, err := apikey.Parse(strings.NewReader("# keys\n\n" + aliceLine + "\n  " + opsLine + "  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 {
		t.Fatalf("Len %d, want 2", set.Len())
	}
	for _, tt := range []struct {
		secret string
		want   apikey.Key
		ok     bool
	}{
		{alice, apikey.Key{Name: "alice", Role: apikey.RoleClient}, true},
		{ops, apikey.Key{Name: "ops", Role: apikey.RoleAdmin}, true},
		{stranger, apikey.Key{}, false},
		{"", apikey.Key{}, false},
		{alice + "x", apikey.Key{}, false},
		{alice[:len(alice)-1], apikey.Key{}, false},
	} {
		got, ok := set.Authenticate(tt.secret)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Authenticate(%.8s…) = %v %v, want %v %v", tt.secret, got, ok, tt.want, tt.ok)
		}
	}
	if a, b := mustSecret(t), mustSecret(t); a == b || len(a) < 40 {
		t.Fatalf("keys %q and %q: want distinct high-entropy keys", a, b)
	}
}

func mustSecret(t *testing.T) string {
	s, _ := newKey(t, "k", apikey.RoleClient)
	return s
}

func TestNewRefusesBadNamesAndRoles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		role apikey.Role
	}{
		{"", apikey.RoleClient},
		{"has space", apikey.RoleClient},
		{strings.Repeat("a", 65), apikey.RoleClient},
		{"alice", "root"},
		{"alice", ""},
	} {
		if _, _, err := apikey.New(tt.name, tt.role); err == nil {
			t.Errorf("New(%q, %q) succeeded", tt.name, tt.role)
		}
	}
}

// TestParseErrorsNameTheLine: every malformed file is refused, and the error
// says on which line and what is wrong.
func TestParseErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	_, alice := newKey(t, "alice", apikey.RoleClient)
	_, bob := newKey(t, "bob", apikey.RoleClient)
	aliceHash := strings.Fields(alice)[2]
	tests := []struct {
		name, file, want string
	}{
		{"TooFewFields", "# c\n" + alice + "\nbob client\n", "line 3: want 3 fields"},
		{"TooManyFields", alice + " extra\n", "line 1: want 3 fields"},
		{"BadRole", "bob root " + strings.Fields(bob)[2] + "\n", `line 1: role "root"`},
		{"BadName", "b/ob client " + strings.Fields(bob)[2] + "\n", `line 1: name "b/ob"`},
		{"NoHashPrefix", "bob client " + strings.TrimPrefix(strings.Fields(bob)[2], "sha256:") + "\n", "line 1: the hash must be sha256:"},
		{"ShortHash", "bob client sha256:abcd\n", "line 1: the hash must be"},
		{"NotHex", "bob client sha256:" + strings.Repeat("zz", 32) + "\n", "line 1: the hash must be"},
		{"KeyInsteadOfHash", "bob client lbk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", "line 1: the hash must be"},
		{"DuplicateName", alice + "\n\n" + "alice admin " + strings.Fields(bob)[2] + "\n", `line 3: name "alice" is already on line 1`},
		{"DuplicateHash", alice + "\n" + "carol client " + aliceHash + "\n", "line 2: the same hash is already on line 1"},
		{"Empty", "# nothing yet\n\n", "no keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := apikey.Parse(strings.NewReader(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "lbk_") {
				t.Fatalf("the error quotes a key: %v", err)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte("alice client sha256:00\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := apikey.Load(path); err == nil || !strings.Contains(err.Error(), path+": line 1") {
		t.Fatalf("Load = %v, want an error naming %s and line 1", err, path)
	}
	if _, err := apikey.Load(path + ".missing"); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
}
