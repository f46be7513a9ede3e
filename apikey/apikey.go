// Package apikey is lockbank's API keys: how a key is made, how a keys file
// names keys by their hashes only, and how a presented key is recognised.
//
// A key is 32 random bytes, shown once when it is made and never stored: the
// keys file holds its SHA-256. A plain hash suffices because keys are
// machine-made and high-entropy (nobody can guess a 256-bit key from its
// hash, with or without a salt); a slow password hash would only add cost to
// every request. Recognising a key compares its hash with every stored hash
// in constant time, so the time taken tells nothing about which, if any,
// matched how far.
package apikey

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Role says what a key may touch.
type Role string

const (
	// RoleAdmin reads and changes every account.
	RoleAdmin Role = "admin"
	// RoleClient reads and changes only the accounts it opened.
	RoleClient Role = "client"
)

// Key is a recognised key: its name and role, never its secret.
type Key struct {
	Name string
	Role Role
}

// secretPrefix marks lockbank keys, so that a key pasted where it does not
// belong can be recognised (by a secret scanner, or a person).
const secretPrefix = "lbk_"

// hashPrefix names the hash in the keys file, so another can be added later.
const hashPrefix = "sha256:"

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidName reports whether name is 1–64 characters of [A-Za-z0-9._-]: a
// key's name goes into log lines and the database, so it is kept plain.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ValidRole reports whether role is admin or client.
func ValidRole(role Role) bool { return role == RoleAdmin || role == RoleClient }

// New makes a key for name with role: the secret, to be handed to its user
// once, and the line of the keys file that lets bankd recognise it.
func New(name string, role Role) (secret, line string, err error) {
	if !ValidName(name) {
		return "", "", fmt.Errorf("apikey: name %q: want 1 to 64 characters of A-Z a-z 0-9 . _ -", name)
	}
	if !ValidRole(role) {
		return "", "", fmt.Errorf("apikey: role %q: want admin or client", role)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("apikey: %w", err)
	}
	secret = secretPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	sum := sha256.Sum256([]byte(secret))
	return secret, fmt.Sprintf("%s %s %s%s", name, role, hashPrefix, hex.EncodeToString(sum[:])), nil
}

// Set is the keys bankd recognises, read from a keys file.
type Set struct {
	entries []entry
}

type entry struct {
	key  Key
	hash [sha256.Size]byte
}

// Len is the number of keys; 0 for a nil Set.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Authenticate returns the key whose secret was presented. It hashes the
// secret and compares the hash with every stored one, in constant time and
// without stopping at a match.
func (s *Set) Authenticate(secret string) (Key, bool) {
	sum := sha256.Sum256([]byte(secret))
	var (
		found Key
		ok    bool
	)
	for _, e := range s.entries {
		if subtle.ConstantTimeCompare(sum[:], e.hash[:]) == 1 {
			found, ok = e.key, true
		}
	}
	return found, ok
}

// Load reads the keys file at path (see Parse).
func Load(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("api keys file: %w", err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("api keys file %s: %w", path, err)
	}
	return s, nil
}

// Parse reads a keys file: one key per line, as three fields separated by
// spaces or tabs —
//
//	# name   role    hash of the key
//	alice    client  sha256:<64 hex digits>
//	ops      admin   sha256:<64 hex digits>
//
// Blank lines and lines starting with # are skipped. A name is 1–64
// characters of [A-Za-z0-9._-]; a role is admin or client. Names and hashes
// must be unique, and there must be at least one key. Errors name the line.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{}
	nameLine := map[string]int{}
	hashLine := map[[sha256.Size]byte]int{}
	scanner := bufio.NewScanner(r)
	n := 0
	for scanner.Scan() {
		n++
		text := strings.TrimSpace(scanner.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e, err := parseLine(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if first, dup := nameLine[e.key.Name]; dup {
			return nil, fmt.Errorf("line %d: name %q is already on line %d", n, e.key.Name, first)
		}
		if first, dup := hashLine[e.hash]; dup {
			return nil, fmt.Errorf("line %d: the same hash is already on line %d (one key, two names)", n, first)
		}
		nameLine[e.key.Name], hashLine[e.hash] = n, n
		s.entries = append(s.entries, e)
	}
	if err := scanner.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: too long", n+1)
		}
		return nil, err
	}
	if len(s.entries) == 0 {
		return nil, errors.New("no keys in it (to run without keys, do not name a keys file)")
	}
	return s, nil
}

func parseLine(text string) (entry, error) {
	fields := strings.Fields(text)
	if len(fields) != 3 {
		return entry{}, fmt.Errorf("want 3 fields (name role %s<hex>), found %d", hashPrefix, len(fields))
	}
	name, role, hash := fields[0], Role(fields[1]), fields[2]
	if !ValidName(name) {
		return entry{}, fmt.Errorf("name %q: want 1 to 64 characters of A-Z a-z 0-9 . _ -", name)
	}
	if !ValidRole(role) {
		return entry{}, fmt.Errorf("role %q: want admin or client", role)
	}
	e := entry{key: Key{Name: name, Role: role}}
	digits, ok := strings.CutPrefix(hash, hashPrefix)
	raw, err := hex.DecodeString(digits)
	if !ok || err != nil || len(raw) != sha256.Size {
		// Not quoted back: a key pasted here by mistake stays out of logs.
		return entry{}, fmt.Errorf("the hash must be %s followed by 64 hex digits (bankd apikey new prints the line; never put the key itself in this file)", hashPrefix)
	}
	copy(e.hash[:], raw)
	return e, nil
}
