package web

import (
	"context"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/lockmgr"
)

// addRoutes is the whole API surface of bankd.
func addRoutes(r chi.Router, node string, accounts *account.Service, locks *lockmgr.Manager, ready func(context.Context) error) {
	r.Get("/healthz", handleHealthz(node))
	r.Get("/readyz", handleReadyz(ready))

	r.Post("/v1/accounts", handleCreateAccount(accounts))
	r.Get("/v1/accounts/{id}", handleGetAccount(accounts))
	r.Post("/v1/accounts/{id}/deposits", handleDeposit(accounts))
	r.Post("/v1/accounts/{id}/withdrawals", handleWithdraw(accounts))
	r.Get("/v1/accounts/{id}/ledger", handleLedger(accounts))

	r.Get("/v1/locks", handleListLocks(locks))
	r.Post("/v1/locks/{resource}", handleAcquireLock(locks))
	r.Put("/v1/locks/{resource}", handleRenewLock(locks))
	r.Delete("/v1/locks/{resource}", handleReleaseLock(locks))
	r.Get("/v1/locks/{resource}", handleGetLock(locks))
}
