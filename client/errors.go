package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is an answer that refused the request: bankd's problem+json (RFC
// 9457), or any other answer that is not 2xx.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is bankd's stable code (insufficient_funds, lock_held, …); ""
	// when the answer was not problem+json (from a proxy, say).
	Code   string
	Title  string
	Detail string
	Type   string
	// RetryAfter is the answer's Retry-After (0 when absent): how long to
	// wait before trying again, for lock_held, lock_timeout and the 503s.
	RetryAfter time.Duration
	// For lock_held: who holds the lock, and until when (by the database's
	// clock).
	Holder    string
	ExpiresAt time.Time
	// RequestID is the answer's X-Request-Id: find the request in the
	// node's log by it.
	RequestID string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("bankd answered %d: %s", e.Status, e.Detail)
	}
	return fmt.Sprintf("bankd answered %d %s: %s", e.Status, e.Code, e.Detail)
}

// ErrorCode returns the code of err when it is (or wraps) an *Error, else
// "" (no answer came, or it was not problem+json).
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// problem is the wire form of a problem+json answer.
type problem struct {
	Type      string     `json:"type"`
	Title     string     `json:"title"`
	Status    int        `json:"status"`
	Detail    string     `json:"detail"`
	Code      string     `json:"code"`
	Holder    string     `json:"holder"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// maxErrorBody bounds how much of a refusal's body is read.
const maxErrorBody = 64 << 10

// readError turns an answer that is not 2xx into an *Error.
func readError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode), RequestID: resp.Header.Get("X-Request-Id")}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var p problem
	if err := json.Unmarshal(data, &p); err != nil || p.Code == "" {
		e.Detail = strings.TrimSpace(string(data[:min(len(data), 200)]))
		return e
	}
	e.Code, e.Title, e.Detail, e.Type, e.Holder = p.Code, p.Title, p.Detail, p.Type, p.Holder
	if p.ExpiresAt != nil {
		e.ExpiresAt = *p.ExpiresAt
	}
	return e
}
