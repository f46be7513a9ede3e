package web

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the contract of this package's API (openapi.yaml), served at
// GET /openapi.yaml. The tests hold the server to it (internal/contract); a
// change to a route, a field or a problem code changes it too. Read it, do
// not modify it.
//
//go:embed openapi.yaml
var OpenAPI []byte

// handleOpenAPI serves the document, open like /healthz: a client needs the
// contract before it has a key.
func handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	}
}
