package lockmgr_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockbank/lockbank/lockmgr"
)

// TestOwnerAloneRenewsAndReleases: a lease taken as alice can be renewed and
// released only as alice, with its lease id; bob, or the Manager acting for
// nobody, gets the answer a wrong lease id gets, and the lease is untouched.
func TestOwnerAloneRenewsAndReleases(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	alice, bob := m.As("alice"), m.As("bob")
	l, err := alice.TryAcquire(b.ctx, "res:owned", "worker-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if l.Owner != "alice" {
		t.Fatalf("Lease.Owner = %q, want alice", l.Owner)
	}
	before, err := m.Get(b.ctx, "res:owned")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := bob.Renew(b.ctx, "res:owned", l.ID, 10*time.Minute); !errors.Is(err, lockmgr.ErrLeaseLost) {
		t.Fatalf("bob renews alice's lease: %v, want ErrLeaseLost", err)
	}
	if _, err := m.Renew(b.ctx, "res:owned", l.ID, 10*time.Minute); !errors.Is(err, lockmgr.ErrLeaseLost) {
		t.Fatalf("no owner renews alice's lease: %v, want ErrLeaseLost", err)
	}
	if err := bob.Release(b.ctx, "res:owned", l.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("bob releases alice's lease: %v, want ErrNotHolder", err)
	}
	if err := m.Release(b.ctx, "res:owned", l.ID); !errors.Is(err, lockmgr.ErrNotHolder) {
		t.Fatalf("no owner releases alice's lease: %v, want ErrNotHolder", err)
	}
	after, err := m.Get(b.ctx, "res:owned")
	after.Remaining, before.Remaining = 0, 0
	if err != nil || after != before {
		t.Fatalf("after the others tried: %+v (%v), want unchanged %+v", after, err, before)
	}

	renewed, err := alice.Renew(b.ctx, "res:owned", l.ID, 2*time.Minute)
	if err != nil || renewed.Token != l.Token || renewed.Owner != "alice" {
		t.Fatalf("alice renews: %+v, %v; want token %d, owner alice", renewed, err, l.Token)
	}
	for range 2 { // releasing twice is harmless for owners too
		if err := alice.Release(b.ctx, "res:owned", l.ID); err != nil {
			t.Fatalf("alice releases: %v", err)
		}
	}
}

// TestTakeoverRecordsNewOwner: every grant writes its owner, so after
// alice's lease runs out, a grant to bob — or to nobody — is renewed and
// released by its own taker, and alice's owner name does not linger.
func TestTakeoverRecordsNewOwner(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	first, err := m.As("alice").TryAcquire(b.ctx, "res:takeover", "a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	expire(t, b, "res:takeover")
	second := mustAcquire(t, m, "res:takeover", "anon", time.Minute)
	if second.Owner != "" {
		t.Fatalf("a grant by no owner has Owner %q", second.Owner)
	}
	if _, err := m.Renew(b.ctx, "res:takeover", second.ID, time.Minute); err != nil {
		t.Fatalf("the new holder (no owner) renews: %v", err)
	}
	if err := m.Release(b.ctx, "res:takeover", second.ID); err != nil {
		t.Fatalf("the new holder (no owner) releases: %v", err)
	}
	third, err := m.As("bob").TryAcquire(b.ctx, "res:takeover", "b", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if third.Token <= second.Token || second.Token <= first.Token {
		t.Fatalf("tokens %d, %d, %d: want strictly increasing", first.Token, second.Token, third.Token)
	}
	if _, err := m.As("bob").Renew(b.ctx, "res:takeover", third.ID, time.Minute); err != nil {
		t.Fatalf("bob renews his takeover: %v", err)
	}
	var owner *string
	if err := b.pool.QueryRow(b.ctx, `SELECT owner FROM leases WHERE resource = 'res:takeover'`).Scan(&owner); err != nil || owner == nil || *owner != "bob" {
		t.Fatalf("owner column %v (%v), want bob", owner, err)
	}
}

// TestOwnedKeepAlive: KeepAlive renews an owned lease as its owner.
func TestOwnedKeepAlive(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	const ttl = 1500 * time.Millisecond
	l, err := m.As("alice").TryAcquire(b.ctx, "res:owned-k", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	k := m.KeepAlive(b.ctx, l)
	defer k.Stop()
	// Wait until a renewal has moved the expiry on, with a deadline.
	deadline := time.Now().Add(3 * ttl)
	for k.Lease().ExpiresAt.Equal(l.ExpiresAt) && k.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := k.Err(); err != nil || !k.Lease().ExpiresAt.After(l.ExpiresAt) {
		t.Fatalf("keepalive of an owned lease: err %v, expires %s (was %s); want renewed", err, k.Lease().ExpiresAt, l.ExpiresAt)
	}
}

func TestOwnerTooLong(t *testing.T) {
	t.Parallel()
	m, b := setup(t)
	if _, err := m.As(strings.Repeat("o", 101)).TryAcquire(b.ctx, "res:o", "h", time.Minute); !errors.Is(err, lockmgr.ErrInvalid) {
		t.Fatalf("TryAcquire with a 101-character owner: %v, want ErrInvalid", err)
	}
}
