package client

import (
	"context"
	"encoding/json"
	"time"
)

// Lease is one grant of a lock, as its holder sees it.
type Lease struct {
	Resource string
	Holder   string
	// Token is the fencing token: it grows with every grant of the resource
	// and stays the same across renewals. Send it with every write to the
	// protected resource (FencingToken).
	Token int64
	// ID is the holder's secret: only it renews or releases the lease.
	ID         string
	AcquiredAt time.Time
	ExpiresAt  time.Time // by the database's clock
	TTL        time.Duration

	deadline time.Time
}

// Deadline is the local time after which the holder must stop believing it
// holds the lock: when the request that granted (or last renewed) the lease
// was sent, plus the TTL, less a twentieth of it for clock drift. The
// database decides expiry by its own clock, never before this.
func (l Lease) Deadline() time.Time { return l.deadline }

// LockStatus is what anyone may see of a lock: never its lease id.
type LockStatus struct {
	Resource  string
	Held      bool
	Holder    string
	Token     int64
	ExpiresAt time.Time
	// Remaining is the time the lease has left by the database's clock; 0
	// when not held.
	Remaining time.Duration
	// LearnedTTL, from GET of an account's lock on a node that learns its
	// lease TTL (--lease-ttl auto): the TTL its next lease gets; else 0.
	LearnedTTL time.Duration
}

// LockRequest is what Acquire asks for.
type LockRequest struct {
	Holder string
	TTL    time.Duration
	// Wait is how long to wait for a held lock (up to a minute); 0 answers
	// lock_held at once.
	Wait time.Duration
}

type leaseWire struct {
	Resource   string    `json:"resource"`
	Holder     string    `json:"holder"`
	Token      int64     `json:"token"`
	ID         string    `json:"lease_id"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	TTLMS      int64     `json:"ttl_ms"`
}

func (w leaseWire) lease(sent time.Time) Lease {
	ttl := time.Duration(w.TTLMS) * time.Millisecond
	return Lease{Resource: w.Resource, Holder: w.Holder, Token: w.Token, ID: w.ID, AcquiredAt: w.AcquiredAt,
		ExpiresAt: w.ExpiresAt, TTL: ttl, deadline: sent.Add(ttl - ttl/20)}
}

func (s *LockStatus) UnmarshalJSON(data []byte) error {
	var w struct {
		Resource       string    `json:"resource"`
		Held           bool      `json:"held"`
		Holder         string    `json:"holder"`
		Token          int64     `json:"token"`
		ExpiresAt      time.Time `json:"expires_at"`
		TTLRemainingMS int64     `json:"ttl_remaining_ms"`
		LearnedTTLMS   int64     `json:"learned_ttl_ms"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = LockStatus{Resource: w.Resource, Held: w.Held, Holder: w.Holder, Token: w.Token, ExpiresAt: w.ExpiresAt,
		Remaining: time.Duration(w.TTLRemainingMS) * time.Millisecond, LearnedTTL: time.Duration(w.LearnedTTLMS) * time.Millisecond}
	return nil
}

func lockPath(resource string) string { return "/v1/locks/" + resource }

// Acquire takes the lock on resource for r.Holder with a lease of r.TTL,
// waiting up to r.Wait while someone else holds it. Refusals: lock_held
// (the *Error names the holder and its expiry, with RetryAfter),
// invalid_request.
func (c *Client) Acquire(ctx context.Context, resource string, r LockRequest, opts ...CallOption) (Lease, error) {
	in := struct {
		Holder string `json:"holder"`
		TTLMS  int64  `json:"ttl_ms"`
		WaitMS int64  `json:"wait_ms,omitempty"`
	}{r.Holder, millis(r.TTL), millis(r.Wait)}
	var w leaseWire
	sent := time.Now()
	if err := c.do(ctx, "POST", lockPath(resource), nil, in, &w, newCall(opts)); err != nil {
		return Lease{}, err
	}
	return w.lease(sent), nil
}

// Renew extends the lease leaseID on resource to ttl from now, keeping its
// token. Refusals: lease_lost (it ran out, was released or taken over),
// invalid_lease_id, invalid_request.
func (c *Client) Renew(ctx context.Context, resource, leaseID string, ttl time.Duration, opts ...CallOption) (Lease, error) {
	in := struct {
		LeaseID string `json:"lease_id"`
		TTLMS   int64  `json:"ttl_ms"`
	}{leaseID, millis(ttl)}
	var w leaseWire
	sent := time.Now()
	if err := c.do(ctx, "PUT", lockPath(resource), nil, in, &w, newCall(opts)); err != nil {
		return Lease{}, err
	}
	return w.lease(sent), nil
}

// Release gives up the lease leaseID on resource; releasing twice, or a
// lease that ran out, is harmless. Refusals: not_holder (a newer grant is
// someone else's), invalid_lease_id.
func (c *Client) Release(ctx context.Context, resource, leaseID string, opts ...CallOption) error {
	cl := newCall(opts)
	cl.header.Set("Lease-Id", leaseID)
	return c.do(ctx, "DELETE", lockPath(resource), nil, nil, nil, cl)
}

// Lock reads the status of resource's lock. Refusals: lock_not_found (never
// locked), invalid_request.
func (c *Client) Lock(ctx context.Context, resource string, opts ...CallOption) (LockStatus, error) {
	var s LockStatus
	err := c.do(ctx, "GET", lockPath(resource), nil, nil, &s, newCall(opts))
	return s, err
}

// Locks lists the live leases.
func (c *Client) Locks(ctx context.Context, opts ...CallOption) ([]LockStatus, error) {
	var out struct {
		Locks []LockStatus `json:"locks"`
	}
	err := c.do(ctx, "GET", "/v1/locks", nil, nil, &out, newCall(opts))
	return out.Locks, err
}
