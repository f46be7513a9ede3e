package contract

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// reports collects what Check and Transport report instead of failing.
type reports struct {
	mu   sync.Mutex
	errs []string
}

func (r *reports) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// answer is a handler that answers status with body (problem+json when it
// has a code), as bankd would, X-Request-Id included.
func answer(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "test")
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(body, `"code"`) {
			w.Header().Set("Content-Type", "application/problem+json")
		}
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
}

func problemBody(status int, code string) string {
	return fmt.Sprintf(`{"type":"urn:lockbank:problem:%s","title":"t","status":%d,"code":%q}`, code, status, code)
}

const entry = `{"id":1,"account_id":1,"kind":"deposit","amount":5,"balance":5,"strategy":"row","fence_token":null,"created_at":"2026-12-01T00:00:00Z"}`

// TestCheck: the checker reports what the document does not allow, and
// only that — a code an operation does not list, an invalid request that
// was accepted, an answer to a route the document lacks that is not chi's
// not_found — from the server's side (Check) and the client's (Transport).
func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, method, path, body string
		status                   int
		answer                   string
		wantReport               string // "" for none
	}{
		{"DocumentedCode", "PUT", "/v1/locks/x", `{"lease_id":"5f0c2c4e-8d6a-4c59-9a63-0d7a8e0f5b11","ttl_ms":1000}`, 409, problemBody(409, "lease_lost"), ""},
		{"UndocumentedCode", "PUT", "/v1/locks/x", `{"lease_id":"5f0c2c4e-8d6a-4c59-9a63-0d7a8e0f5b11","ttl_ms":1000}`, 409, problemBody(409, "not_holder"), `value is not one of the allowed values`},
		{"UndocumentedStatus", "GET", "/v1/locks/x", ``, 409, problemBody(409, "lock_held"), `status is not supported`},
		{"UndocumentedField", "POST", "/v1/accounts/1/deposits", `{"amount":5}`, 201, strings.Replace(entry, `{`, `{"extra":1,`, 1), `"extra" is unsupported`},
		{"InvalidRequestRefused", "POST", "/v1/accounts/1/deposits", `{"amount":0}`, 422, problemBody(422, "invalid_amount"), ""},
		{"InvalidRequestAccepted", "POST", "/v1/accounts/1/deposits", `{"amount":0}`, 201, entry, `the document calls the request invalid`},
		{"UnroutedNotFound", "GET", "/v2/nothing", ``, 404, problemBody(404, "not_found"), ""},
		{"UnroutedAnswered", "GET", "/v2/nothing", ``, 200, `{}`, `is not in the document`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Server side: Check wraps the handler.
			checked := &reports{}
			srv := httptest.NewServer(Check(checked)(answer(tt.status, tt.answer)))
			t.Cleanup(srv.Close)
			send(t, http.DefaultClient, tt.method, srv.URL+tt.path, tt.body)
			// Client side: Transport under a plain handler.
			plain := httptest.NewServer(answer(tt.status, tt.answer))
			t.Cleanup(plain.Close)
			transported := &reports{}
			send(t, &http.Client{Transport: Transport(transported, nil)}, tt.method, plain.URL+tt.path, tt.body)

			for side, r := range map[string]*reports{"Check": checked, "Transport": transported} {
				switch {
				case tt.wantReport == "" && len(r.errs) != 0:
					t.Errorf("%s reported %q, want nothing", side, r.errs)
				case tt.wantReport != "" && (len(r.errs) != 1 || !strings.Contains(r.errs[0], tt.wantReport)):
					t.Errorf("%s reported %q, want one report containing %q", side, r.errs, tt.wantReport)
				}
			}
		})
	}
}

func send(t *testing.T, c *http.Client, method, url, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
