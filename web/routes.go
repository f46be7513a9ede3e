package web

import (
	"context"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/apikey"
	"github.com/lockbank/lockbank/lockmgr"
)

// addRoutes is the whole API surface of bankd; openapi.yaml describes each
// route (a test checks that the two list the same ones).
func addRoutes(r chi.Router, node string, accounts *account.Service, locks *lockmgr.Manager, keys *apikey.Set, ready func(context.Context) error, o options) {
	// Open always, so that load balancers and container health checks need
	// no key, and a client can read the contract before it has one.
	r.Get("/healthz", handleHealthz(node))
	r.Get("/readyz", handleReadyz(ready))
	r.Get("/openapi.yaml", handleOpenAPI())
	// The live page and its data (live.go), open like the above.
	addLiveRoutes(r, o, keys != nil)

	r.Route("/v1", func(r chi.Router) {
		if keys != nil {
			// Every /v1 request, unknown paths and methods included.
			r.Use(authenticate(keys))
		}
		r.Post("/accounts", handleCreateAccount(accounts))
		r.Get("/accounts/{id}", handleGetAccount(accounts))
		r.Post("/accounts/{id}/deposits", handleDeposit(accounts))
		r.Post("/accounts/{id}/withdrawals", handleWithdraw(accounts))
		r.Get("/accounts/{id}/ledger", handleLedger(accounts))

		r.Get("/locks", handleListLocks(locks))
		r.Post("/locks/{resource}", handleAcquireLock(locks, accounts))
		r.Put("/locks/{resource}", handleRenewLock(locks))
		r.Delete("/locks/{resource}", handleReleaseLock(locks))
		r.Get("/locks/{resource}", handleGetLock(locks, accounts))
	})
}
