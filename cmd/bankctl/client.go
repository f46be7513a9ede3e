package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// client speaks bankd's HTTP API.
type client struct {
	base string
	http *http.Client
}

func newClient(base string) *client {
	// Many concurrent clients in a race: keep their connections.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	return &client{base: base, http: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// reply is one answer: status, the decoded JSON body, the problem code
// when it is an error, and whether it replays the stored outcome of an
// earlier request with the same Idempotency-Key.
type reply struct {
	Status   int
	Body     map[string]any
	Code     string
	Replayed bool
}

func (r reply) int(field string) int64 {
	f, _ := r.Body[field].(float64)
	return int64(f)
}

func (r reply) str(field string) string {
	s, _ := r.Body[field].(string)
	return s
}

func (c *client) do(ctx context.Context, method, path string, body any, header map[string]string) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	r := reply{Status: resp.StatusCode, Replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 {
		if err := json.Unmarshal(data, &r.Body); err != nil {
			return r, fmt.Errorf("%s %s: %d with a body that is not JSON: %.200s", method, path, resp.StatusCode, data)
		}
	}
	r.Code = r.str("code")
	return r, nil
}

func (c *client) createAccount(ctx context.Context, owner string, balance int64) (int64, error) {
	r, err := c.do(ctx, "POST", "/v1/accounts", map[string]any{"owner": owner, "balance": balance}, nil)
	if err != nil {
		return 0, err
	}
	if r.Status != http.StatusCreated {
		return 0, fmt.Errorf("create account: %d %v", r.Status, r.Body)
	}
	return r.int("id"), nil
}

type withdrawal struct {
	Amount   int64  `json:"amount"`
	Strategy string `json:"strategy,omitempty"`
	HoldMS   int64  `json:"hold_ms,omitempty"`
}

func (c *client) withdraw(ctx context.Context, id int64, w withdrawal, header map[string]string) (reply, error) {
	return c.do(ctx, "POST", "/v1/accounts/"+strconv.FormatInt(id, 10)+"/withdrawals", w, header)
}

// accountState is an account and its ledger, read from one node.
type accountState struct {
	Balance, Opening int64
	Withdrawn        int64 // Σ withdrawals in the ledger
	Deposited        int64
	Entries          []map[string]any
}

// consistent: the balance is what the ledger says it must be.
func (s accountState) consistent() bool { return s.Balance == s.Opening+s.Deposited-s.Withdrawn }

func (c *client) account(ctx context.Context, id int64) (accountState, error) {
	path := "/v1/accounts/" + strconv.FormatInt(id, 10)
	a, err := c.do(ctx, "GET", path, nil, nil)
	if err != nil {
		return accountState{}, err
	}
	if a.Status != http.StatusOK {
		return accountState{}, fmt.Errorf("get account %d: %d %v", id, a.Status, a.Body)
	}
	s := accountState{Balance: a.int("balance"), Opening: a.int("opening_balance")}
	var after int64
	for {
		l, err := c.do(ctx, "GET", path+"/ledger?limit=10000&after="+strconv.FormatInt(after, 10), nil, nil)
		if err != nil {
			return s, err
		}
		if l.Status != http.StatusOK {
			return s, fmt.Errorf("ledger %d: %d %v", id, l.Status, l.Body)
		}
		entries, _ := l.Body["entries"].([]any)
		for _, e := range entries {
			m := e.(map[string]any)
			amount := int64(m["amount"].(float64))
			if m["kind"] == "withdrawal" {
				s.Withdrawn += amount
			} else {
				s.Deposited += amount
			}
			s.Entries = append(s.Entries, m)
		}
		next, ok := l.Body["next_after"].(float64)
		if !ok {
			return s, nil
		}
		after = int64(next)
	}
}

// lockStatus reads GET /v1/locks/{resource}; held is false when never locked.
func (c *client) lockStatus(ctx context.Context, resource string) (reply, error) {
	return c.do(ctx, "GET", "/v1/locks/"+resource, nil, nil)
}

func (c *client) nodeName(ctx context.Context) (string, error) {
	r, err := c.do(ctx, "GET", "/healthz", nil, nil)
	if err != nil {
		return "", err
	}
	if r.Status != http.StatusOK {
		return "", fmt.Errorf("/healthz: %d", r.Status)
	}
	return r.str("node"), nil
}

func (c *client) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		r, err := c.do(ctx, "GET", "/readyz", nil, nil)
		if err == nil && r.Status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("/readyz: %d", r.Status)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
