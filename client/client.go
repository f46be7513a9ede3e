// Package client is the Go client of bankd's HTTP API, the one that
// bankctl and lockbank's own tests use.
//
// A Client speaks to one bankd node:
//
//	accounts   CreateAccount, Account, Deposit, Withdraw, LedgerPage, Ledger (an iterator over every page)
//	locks      Acquire (optionally waiting), Renew, Release, Lock, Locks, KeepAlive (renews over HTTP)
//	the node   Health, Ready
//
// Answers are decoded into the types of this package. A refusal — any
// problem+json answer, or any other answer that is not 2xx — is an *Error
// with bankd's stable Code (see the error table in the README); anything
// else that goes wrong (no answer, a body that does not decode) is an
// ordinary error, and then nobody knows whether a change was applied: retry
// it with the same IdempotencyKey to find out.
//
// Per-call options add the headers a call may carry (IdempotencyKey,
// FencingToken, RequestID) and capture what the answer said beside its body
// (CaptureResponse: the status, X-Request-Id, whether an idempotent replay).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client is a client of one bankd node. It is safe for concurrent use.
type Client struct {
	base   string
	http   *http.Client
	apiKey string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sends the requests through hc (its transport, its
// timeout). The default is http.DefaultClient.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithAPIKey sends key with every request as Authorization: Bearer <key>.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// New returns a client of the bankd node at baseURL (e.g.
// http://127.0.0.1:8080).
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), http: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c
}

// URL is the node's base URL, as given to New.
func (c *Client) URL() string { return c.base }

// Response is what an answer said beside its body. Pass CaptureResponse to
// a call to have it, whatever the call returns (also with an *Error).
type Response struct {
	StatusCode int
	// RequestID is the answer's X-Request-Id: the request's id in the node's
	// log.
	RequestID string
	// Replayed: the answer is the stored outcome of an earlier request with
	// the same Idempotency-Key, not a new change (Idempotent-Replayed: true).
	Replayed bool
	Header   http.Header
}

// CallOption is an option of one call.
type CallOption func(*call)

type call struct {
	header   http.Header
	response *Response
	pageSize int
}

// IdempotencyKey sends key as the Idempotency-Key of a deposit or
// withdrawal: a retry with the same key and body is never applied twice.
func IdempotencyKey(key string) CallOption {
	return func(c *call) { c.header.Set("Idempotency-Key", key) }
}

// FencingToken sends token as the Fencing-Token of a deposit or withdrawal:
// it is applied only while token is the newest live grant of the account's
// lease.
func FencingToken(token int64) CallOption {
	return func(c *call) { c.header.Set("Fencing-Token", fmt.Sprint(token)) }
}

// RequestID sends id as the request's X-Request-Id, so that the node logs
// the request under it.
func RequestID(id string) CallOption {
	return func(c *call) { c.header.Set("X-Request-Id", id) }
}

// CaptureResponse fills r with what the answer said beside its body, once
// an answer came.
func CaptureResponse(r *Response) CallOption {
	return func(c *call) { c.response = r }
}

// PageSize sets how many entries each page of Ledger asks for (1–10000;
// without it, bankd's default of 1000).
func PageSize(n int) CallOption {
	return func(c *call) { c.pageSize = n }
}

func newCall(opts []CallOption) *call {
	c := &call{header: http.Header{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// do sends one request and decodes a 2xx answer's body into out (unless out
// is nil); any other answer is an *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any, cl *call) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	for name, values := range cl.header {
		req.Header[name] = values
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if cl.response != nil {
		*cl.response = Response{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id"),
			Replayed: resp.Header.Get("Idempotent-Replayed") == "true", Header: resp.Header}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("client: %s %s: %d with a body that does not decode: %w", method, path, resp.StatusCode, err)
		}
	}
	// Read to the end, so that the connection can serve the next request.
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// millis is d in whole milliseconds, as the API counts time.
func millis(d time.Duration) int64 { return d.Milliseconds() }
