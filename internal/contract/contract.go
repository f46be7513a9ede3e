// Package contract holds bankd's HTTP handler to its OpenAPI document
// (web/openapi.yaml) in tests: Check wraps the handler and validates every
// request and every response against the document with kin-openapi's
// openapi3filter, reporting each mismatch as a test error. So an endpoint, a
// field, a header or a problem code that the handler serves but the document
// lacks fails the test that made the request.
//
// Responses are validated always. A request is validated too, but a request
// the document calls invalid is only an error when the server accepted it
// (answered below 400): tests of bad input send invalid requests on purpose,
// and what the contract promises for them is a 4xx problem the document
// describes, which the response check holds the server to.
package contract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/lockbank/lockbank/web"
)

// Reporter is where mismatches go: a *testing.T, or anything with Errorf.
type Reporter interface {
	Errorf(format string, args ...any)
}

var (
	loadOnce sync.Once
	loaded   struct {
		doc    *openapi3.T
		router routers.Router
		err    error
	}
)

// Document returns web's OpenAPI document, loaded and validated once per
// test binary.
func Document() (*openapi3.T, routers.Router, error) {
	loadOnce.Do(func() {
		// The live page's routes answer text: checked as strings.
		for _, ct := range []string{"text/html", "text/css", "text/javascript", "text/event-stream"} {
			openapi3filter.RegisterBodyDecoder(ct, textBody)
		}
		doc, err := openapi3.NewLoader().LoadFromData(web.OpenAPI)
		if err == nil {
			err = doc.Validate(context.Background())
		}
		if err != nil {
			loaded.err = fmt.Errorf("contract: web/openapi.yaml: %w", err)
			return
		}
		loaded.doc = doc
		loaded.router, loaded.err = legacy.NewRouter(doc)
	})
	return loaded.doc, loaded.router, loaded.err
}

// Check returns a middleware that validates every request and response that
// passes through it against the document, reporting mismatches to t. It
// reports once, at once, when the document itself does not load.
func Check(t Reporter) func(http.Handler) http.Handler {
	doc, router, err := Document()
	if err != nil {
		t.Errorf("%v", err)
	}
	return func(next http.Handler) http.Handler {
		if err != nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A CORS preflight (the live page driving another node) is
			// the browser asking for leave, not a request of the API.
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				next.ServeHTTP(w, r)
				return
			}
			body, readErr := io.ReadAll(r.Body)
			if readErr != nil {
				t.Errorf("contract: reading the request body of %s %s: %v", r.Method, r.URL.Path, readErr)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			rec := &recorder{ResponseWriter: w}
			route, pathParams, routeErr := findRoute(router, r)
			if routeErr != nil {
				next.ServeHTTP(rec, r)
				checkUnrouted(t, doc, r, rec.statusCode(), rec.Header(), rec.body.Bytes(), routeErr)
				return
			}
			reqInput, reqErr := validateRequest(r, body, route, pathParams)
			next.ServeHTTP(rec, r)
			checkExchange(t, r, reqInput, reqErr, rec.statusCode(), rec.Header().Clone(), rec.body.Bytes())
		})
	}
}

// validateRequest validates r, whose body is body, on a copy: the handler
// reads the original.
func validateRequest(r *http.Request, body []byte, route *routers.Route, pathParams map[string]string) (*openapi3filter.RequestValidationInput, error) {
	clone := r.Clone(r.Context())
	clone.Body = io.NopCloser(bytes.NewReader(body))
	reqInput := &openapi3filter.RequestValidationInput{
		Request:    clone,
		PathParams: pathParams,
		Route:      route,
		Options: &openapi3filter.Options{
			MultiError:         true,
			AuthenticationFunc: bearerPresent,
		},
	}
	return reqInput, openapi3filter.ValidateRequest(r.Context(), reqInput)
}

// checkExchange reports a request the document calls invalid that was
// accepted anyway, and any response the document does not allow.
func checkExchange(t Reporter, r *http.Request, reqInput *openapi3filter.RequestValidationInput, reqErr error, status int, header http.Header, body []byte) {
	if reqErr != nil && status < 400 {
		t.Errorf("contract: %s %s: the document calls the request invalid, yet it was answered %d: %v", r.Method, r.URL.Path, status, reqErr)
	}
	respErr := openapi3filter.ValidateResponse(r.Context(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqInput,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{MultiError: true, IncludeResponseStatus: true},
	})
	if respErr != nil {
		t.Errorf("contract: %s %s answered %d %s: the document does not allow it: %v", r.Method, r.URL.Path, status, excerpt(body), respErr)
	}
}

// findRoute is the document's operation for r, as chi would route it.
func findRoute(router routers.Router, r *http.Request) (*routers.Route, map[string]string, error) {
	route, pathParams, err := router.FindRoute(r)
	for name, value := range pathParams {
		// The legacy router lets a parameter match nothing
		// (DELETE /v1/locks as /v1/locks/{resource}); chi does not.
		if value == "" && err == nil {
			err = fmt.Errorf("empty path parameter %s", name)
		}
	}
	return route, pathParams, err
}

// checkUnrouted holds a request for a path or method the document lacks to
// the answers chi gives it: a not_found or method_not_allowed problem (or,
// with API keys, unauthenticated, which /v1's middleware answers first).
func checkUnrouted(t Reporter, doc *openapi3.T, r *http.Request, status int, header http.Header, body []byte, routeErr error) {
	want := map[int]string{
		http.StatusNotFound:         "not_found",
		http.StatusMethodNotAllowed: "method_not_allowed",
		http.StatusUnauthorized:     "unauthenticated",
	}[status]
	if want == "" {
		t.Errorf("contract: %s %s is not in the document (%v), yet it was answered %d %s", r.Method, r.URL.Path, routeErr, status, excerpt(body))
		return
	}
	var problem struct {
		Code string `json:"code"`
	}
	value, err := decodeJSON(body, &problem)
	if err == nil {
		err = doc.Components.Schemas["Problem"].Value.VisitJSON(value)
	}
	if err == nil && problem.Code != want {
		err = fmt.Errorf("code %q, want %q", problem.Code, want)
	}
	if ct := header.Get("Content-Type"); err == nil && ct != "application/problem+json" {
		err = fmt.Errorf("Content-Type %q", ct)
	}
	if err != nil {
		t.Errorf("contract: %s %s (not in the document) answered %d: %v", r.Method, r.URL.Path, status, err)
	}
}

// bearerPresent stands in for the server's key check: the document only
// says that a key, when sent, is a Bearer one.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if in.SecuritySchemeName != "bearerAuth" {
		return fmt.Errorf("unknown security scheme %q", in.SecuritySchemeName)
	}
	if !strings.HasPrefix(strings.ToLower(in.RequestValidationInput.Request.Header.Get("Authorization")), "bearer ") {
		return errors.New("no Authorization: Bearer header")
	}
	return nil
}

// recorder passes a response through while keeping its status and body.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Flush keeps streaming answers streaming.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) statusCode() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// excerpt is the start of a body, for a message.
func excerpt(b []byte) string {
	const max = 300
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// textBody decodes a text answer as one string.
func textBody(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	b, err := io.ReadAll(body)
	return string(b), err
}
