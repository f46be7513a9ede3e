package web

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/lockmgr"
)

// maxWait bounds how long POST /v1/locks may wait for a lock.
const maxWait = 60 * time.Second

type acquireRequest struct {
	Holder string `json:"holder"`
	TTLMS  int64  `json:"ttl_ms"`
	WaitMS int64  `json:"wait_ms"`
}

// leaseResponse is a grant as the holder sees it, secret lease id included.
type leaseResponse struct {
	lockmgr.Lease
	TTLMS int64 `json:"ttl_ms"`
}

func newLeaseResponse(l *lockmgr.Lease) leaseResponse {
	return leaseResponse{Lease: *l, TTLMS: l.TTL.Milliseconds()}
}

// handleAcquireLock grants a lease to the caller's key (none without keys);
// an account's lease only to a key with access to the account.
func handleAcquireLock(locks *lockmgr.Manager, accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resource, err := lockResource(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		req, err := decode[acquireRequest](w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if req.WaitMS < 0 || req.WaitMS > maxWait.Milliseconds() {
			writeError(w, r, &account.Error{Code: account.CodeInvalidRequest, Message: "wait_ms must be from 0 to 60000"})
			return
		}
		if err := checkLeaseAccess(r.Context(), accounts, resource); err != nil {
			writeError(w, r, err)
			return
		}
		taker := locks.As(leaseOwner(r.Context()))
		ttl := millis(req.TTLMS)
		var lease *lockmgr.Lease
		if req.WaitMS == 0 {
			lease, err = taker.TryAcquire(r.Context(), resource, req.Holder, ttl)
		} else {
			ctx, cancel := context.WithTimeout(r.Context(), millis(req.WaitMS))
			lease, err = taker.Acquire(ctx, resource, req.Holder, ttl)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
				// Waited long enough: answer with who holds it now.
				lease, err = taker.TryAcquire(r.Context(), resource, req.Holder, ttl)
			}
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, http.StatusCreated, newLeaseResponse(lease))
	}
}

type renewRequest struct {
	LeaseID string `json:"lease_id"`
	TTLMS   int64  `json:"ttl_ms"`
}

// handleRenewLock renews a lease of the caller's key; another key's lease
// is lease_lost, like a wrong lease id.
func handleRenewLock(locks *lockmgr.Manager) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resource, err := lockResource(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		req, err := decode[renewRequest](w, r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if !lockmgr.ValidLeaseID(req.LeaseID) {
			writeError(w, r, &account.Error{Code: codeInvalidLeaseID, Message: "lease_id must be the UUID returned when the lock was granted"})
			return
		}
		lease, err := locks.As(leaseOwner(r.Context())).Renew(r.Context(), resource, req.LeaseID, millis(req.TTLMS))
		if err != nil {
			writeError(w, r, err)
			return
		}
		encode(w, http.StatusOK, newLeaseResponse(lease))
	}
}

// handleReleaseLock releases a lease of the caller's key; another key's
// lease is not_holder, like a wrong lease id.
func handleReleaseLock(locks *lockmgr.Manager) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resource, err := lockResource(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		ids := r.Header.Values("Lease-Id")
		if len(ids) != 1 || !lockmgr.ValidLeaseID(ids[0]) {
			writeError(w, r, &account.Error{Code: codeInvalidLeaseID, Message: "send the lease id returned when the lock was granted in one Lease-Id header"})
			return
		}
		if err := locks.As(leaseOwner(r.Context())).Release(r.Context(), resource, ids[0]); err != nil {
			writeError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// lockStatus is what anyone may see of a lock: never the lease id.
type lockStatus struct {
	Resource       string    `json:"resource"`
	Held           bool      `json:"held"`
	Holder         string    `json:"holder"`
	Token          int64     `json:"token"`
	ExpiresAt      time.Time `json:"expires_at"`
	TTLRemainingMS int64     `json:"ttl_remaining_ms"`
	// LearnedTTLMS, on an account's lock when this node learns its lease
	// TTL (--lease-ttl auto): the TTL its next lease of an account gets.
	LearnedTTLMS *int64 `json:"learned_ttl_ms,omitempty"`
}

func newLockStatus(s lockmgr.Status) lockStatus {
	return lockStatus{Resource: s.Resource, Held: s.Held, Holder: s.Holder, Token: s.Token, ExpiresAt: s.ExpiresAt,
		TTLRemainingMS: s.Remaining.Milliseconds()}
}

func handleGetLock(locks *lockmgr.Manager, accounts *account.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resource, err := lockResource(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		s, err := locks.Get(r.Context(), resource)
		if err != nil {
			writeError(w, r, err)
			return
		}
		status := newLockStatus(s)
		if _, ok := account.LeaseAccount(resource); ok && accounts.AutoTTL() != nil {
			ms := accounts.AutoTTL().TTL().Milliseconds()
			status.LearnedTTLMS = &ms
		}
		encode(w, http.StatusOK, status)
	}
}

func handleListLocks(locks *lockmgr.Manager) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		statuses, err := locks.List(r.Context(), 1000)
		if err != nil {
			writeError(w, r, err)
			return
		}
		out := make([]lockStatus, 0, len(statuses))
		for _, s := range statuses {
			out = append(out, newLockStatus(s))
		}
		encode(w, http.StatusOK, map[string]any{"locks": out})
	}
}

func lockResource(r *http.Request) (string, error) {
	resource := chi.URLParam(r, "resource")
	if !lockmgr.ValidResource(resource) {
		return "", &account.Error{Code: account.CodeInvalidRequest, Message: "a lock's resource is 1 to 200 characters of A-Z a-z 0-9 : _ . -"}
	}
	return resource, nil
}

// millis converts a millisecond count, saturating instead of overflowing so
// that huge values stay out of range for the validation that follows.
func millis(ms int64) time.Duration {
	if ms > int64(24*time.Hour/time.Millisecond) {
		return 24 * time.Hour
	}
	return time.Duration(ms) * time.Millisecond
}
