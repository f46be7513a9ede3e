package lockmgr

import (
	"context"
	"time"
)

// Owner is a Manager acting for one owner: an identity its caller has
// established, such as the name of an API key a request was authenticated
// with. Every lease it grants records the owner, and it renews or releases
// only leases granted to the same owner — the lease id alone is not enough.
// Another owner (or the Manager itself, which acts for none) renewing or
// releasing gets the same answer as a wrong lease id, so nobody learns whose
// a lease is. Waiting, fencing tokens and Status are the same for every
// owner: the lock is one, whoever asks. Owner is cheap: make one per call.
type Owner struct {
	m    *Manager
	name string
}

// As returns m acting for owner, at most 100 characters; "" is no owner,
// the same as m itself. A Lease it grants carries the owner (Lease.Owner),
// so KeepAlive renews it as that owner.
func (m *Manager) As(owner string) *Owner { return &Owner{m: m, name: owner} }

// TryAcquire is Manager.TryAcquire, recording the owner with the grant.
// Errors: ErrHeld (as *HeldError), ErrInvalid (an owner over 100 characters
// too).
func (o *Owner) TryAcquire(ctx context.Context, resource, holder string, ttl time.Duration) (*Lease, error) {
	return o.m.tryAcquire(ctx, resource, holder, o.name, ttl)
}

// Acquire is Manager.Acquire, recording the owner with the grant. Errors:
// ErrInvalid, ctx.Err().
func (o *Owner) Acquire(ctx context.Context, resource, holder string, ttl time.Duration) (*Lease, error) {
	return o.m.acquire(ctx, resource, holder, o.name, ttl)
}

// Renew is Manager.Renew of a lease granted to this owner. Errors:
// ErrLeaseLost (also for a lease of another owner), ErrInvalid.
func (o *Owner) Renew(ctx context.Context, resource, leaseID string, ttl time.Duration) (*Lease, error) {
	return o.m.renew(ctx, resource, leaseID, o.name, ttl)
}

// Release is Manager.Release of a lease granted to this owner. Errors:
// ErrNotHolder (also for a lease of another owner).
func (o *Owner) Release(ctx context.Context, resource, leaseID string) error {
	return o.m.release(ctx, resource, leaseID, o.name)
}

// nullable is owner as a query argument: NULL for none.
func nullable(owner string) any {
	if owner == "" {
		return nil
	}
	return owner
}
