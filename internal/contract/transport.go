package contract

import (
	"bytes"
	"io"
	"net/http"
)

// Transport returns a RoundTripper that sends requests through base (nil
// for http.DefaultTransport) and validates each request and its response
// against the document as Check does, from the client's side: for tests
// that talk to a bankd they did not build the handler of (cmd/bankd's run,
// a process). A request that gets no response is not checked.
func Transport(t Reporter, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	doc, router, err := Document()
	if err != nil {
		t.Errorf("%v", err)
		return base
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		var body []byte
		if r.Body != nil && r.Body != http.NoBody {
			var readErr error
			body, readErr = io.ReadAll(r.Body)
			_ = r.Body.Close()
			if readErr != nil {
				return nil, readErr
			}
		}
		// A RoundTripper must not change the caller's request: send a copy.
		out := r.Clone(r.Context())
		if r.Body != nil && r.Body != http.NoBody {
			out.Body = io.NopCloser(bytes.NewReader(body))
		}
		route, pathParams, routeErr := findRoute(router, r)
		var (
			reqErr error
			check  = func(*http.Response, []byte) {}
		)
		if routeErr == nil {
			reqInput, err := validateRequest(r, body, route, pathParams)
			reqErr = err
			check = func(resp *http.Response, respBody []byte) {
				checkExchange(t, r, reqInput, reqErr, resp.StatusCode, resp.Header, respBody)
			}
		} else {
			check = func(resp *http.Response, respBody []byte) {
				checkUnrouted(t, doc, r, resp.StatusCode, resp.Header, respBody, routeErr)
			}
		}
		resp, err := base.RoundTrip(out)
		if err != nil {
			return resp, err
		}
		respBody, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(respBody))
		check(resp, respBody)
		return resp, nil
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
