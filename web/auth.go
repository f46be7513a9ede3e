package web

import (
	"context"
	"net/http"
	"strings"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/apikey"
)

// Who may touch what (DESIGN.md, invariant 13), when bankd has API keys:
//
//   - every /v1 request carries Authorization: Bearer <key>, else 401
//     unauthenticated — one answer for a missing, malformed or unknown key;
//   - an account belongs to the key that opened it: a client key reading or
//     changing another's account gets the 404 a missing account gets; an
//     admin key reaches every account;
//   - a client key may take an account's lease (account:{id}) only for its
//     own accounts, since holding another's would stall that account's lease
//     withdrawals and stale its holder's fencing tokens;
//   - a lease is renewed or released only by the key that took it, with its
//     lease id (lockmgr's Manager.As), admin keys included; another key gets
//     the answer a wrong lease id gets;
//   - what any lock looks like (GET, the list, lock_held) every key sees, as
//     without keys: a lock is shared by all who use it, and trying to take
//     one tells as much. Never the lease id, nor which key holds it.
//
// With no keys, all of this is off and nothing is asked.

// authenticate lets a request through only with the Bearer key of one of
// keys, and puts that key (never its secret) in the request's context.
func authenticate(keys *apikey.Set) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			secret, ok := bearer(r)
			var key apikey.Key
			if ok {
				key, ok = keys.Authenticate(secret)
			}
			if !ok {
				// One answer whatever was wrong, and nothing of what was sent
				// is logged or echoed.
				w.Header().Set("WWW-Authenticate", `Bearer realm="lockbank"`)
				writeProblem(w, newProblem(codeUnauthenticated, "this API needs a key: send Authorization: Bearer followed by an API key of this server"))
				return
			}
			ctx := context.WithValue(r.Context(), apiKeyKey, key)
			ctx = context.WithValue(ctx, loggerKey, loggerFrom(ctx).With("api_key", key.Name))
			noteFrom(ctx).apiKey = key.Name
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// bearer returns the key of the one Authorization header, "Bearer <key>"
// (the scheme in any case, RFC 9110).
func bearer(r *http.Request) (string, bool) {
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return "", false
	}
	scheme, secret, ok := strings.Cut(values[0], " ")
	secret = strings.TrimLeft(secret, " ")
	return secret, ok && strings.EqualFold(scheme, "Bearer") && secret != ""
}

// callerKey is the key a request was authenticated with; false when bankd
// has no keys.
func callerKey(ctx context.Context) (apikey.Key, bool) {
	k, ok := ctx.Value(apiKeyKey).(apikey.Key)
	return k, ok
}

// leaseOwner is who the caller's leases belong to: its key's name, or no
// one when bankd has no keys.
func leaseOwner(ctx context.Context) string {
	k, _ := callerKey(ctx)
	return k.Name
}

// checkAccountAccess returns nil when the caller may read or change account
// id: always without keys or with an admin key; with a client key only for
// an account it opened. Otherwise account_not_found, word for word the
// answer for a missing account.
func checkAccountAccess(ctx context.Context, accounts *account.Service, id int64) error {
	k, ok := callerKey(ctx)
	if !ok || k.Role == apikey.RoleAdmin {
		return nil
	}
	return accounts.CheckKey(ctx, id, k.Name)
}

// checkLeaseAccess returns nil when the caller may take the lock resource:
// any lock, but an account's lease only with access to that account.
func checkLeaseAccess(ctx context.Context, accounts *account.Service, resource string) error {
	id, ok := account.LeaseAccount(resource)
	if !ok {
		return nil
	}
	return checkAccountAccess(ctx, accounts, id)
}
