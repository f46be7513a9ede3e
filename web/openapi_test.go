package web_test

import (
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/lockbank/lockbank/account"
	"github.com/lockbank/lockbank/internal/contract"
	"github.com/lockbank/lockbank/web"
)

// TestOpenAPIListsEveryRoute holds routes.go and openapi.yaml to each other:
// every route chi serves is an operation of the document, and every
// operation is a route.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	doc, _, err := contract.Document()
	if err != nil {
		t.Fatal(err)
	}
	var inDoc []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inDoc = append(inDoc, method+" "+path)
		}
	}
	var inChi []string
	// The handlers are only built, never called: no dependencies needed.
	h := web.NewServer(slog.New(slog.DiscardHandler), "node-t", nil, nil, nil, nil, nil)
	err = chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route != "/" { // the live page's root is "/" in both
			route = strings.TrimSuffix(route, "/")
		}
		inChi = append(inChi, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(inDoc)
	slices.Sort(inChi)
	for _, r := range inChi {
		if !slices.Contains(inDoc, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, r := range inDoc {
		if !slices.Contains(inChi, r) {
			t.Errorf("openapi.yaml has %s, which no route serves", r)
		}
	}
	if len(inChi) == 0 {
		t.Fatal("chi.Walk found no routes")
	}
}

// TestOpenAPIServed: the document is served as it is embedded, as YAML.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	b := setup(t, account.Options{})
	r := b.do(t, request{"GET", "/openapi.yaml", nil, ``})
	if r.status != 200 || r.header.Get("Content-Type") != "application/yaml" || string(r.body) != string(web.OpenAPI) {
		t.Fatalf("GET /openapi.yaml: %d %s, %d bytes; want 200 application/yaml, the embedded %d bytes", r.status, r.header.Get("Content-Type"), len(r.body), len(web.OpenAPI))
	}
}
