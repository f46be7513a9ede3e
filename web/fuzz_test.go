package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/account"
)

// FuzzDecode feeds arbitrary bodies to the strict decoder. Whatever comes in,
// it must not panic, and it must either decode or refuse with a code that
// has a 4xx status in the one table — never an internal error.
// Its seeds run with every go test; for a longer run:
//
//	go test ./web -run '^$' -fuzz FuzzDecode -fuzztime 60s
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"amount":500}`, `{"amount":500,"strategy":"row","hold_ms":10}`, `{"amount":5.0}`, `{"amount":"5"}`,
		`{"amount":1,"amount":2}`, `{"a":{"b":[1,{"c":2,"c":3}]}}`, `[]`, `null`, ``, `{`, `{"amount":1}{}`,
		`{"amount":99999999999999999999}`, `{"strategy":null}`, "\xff\xfe", `{"owner":"\u0000"}`, strings.Repeat("[", 10000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		_, err := decode[withdrawRequest](httptest.NewRecorder(), req)
		if err == nil {
			return
		}
		var refusal *account.Error
		if !errors.As(err, &refusal) {
			t.Fatalf("decode(%q) = %v: not a refusal", body, err)
		}
		pt, ok := problemTypes[refusal.Code]
		if !ok || pt.status < 400 || pt.status >= 500 {
			t.Fatalf("decode(%q) refused with code %q (status %d): want a 4xx code from the table", body, refusal.Code, pt.status)
		}
	})
}

var printableKey = regexp.MustCompile(`^[\x20-\x7e]{1,255}$`)

// FuzzHeaders: Idempotency-Key and Fencing-Token are accepted exactly when
// they are well formed, and what is accepted is what was sent.
//
//	go test ./web -run '^$' -fuzz FuzzHeaders -fuzztime 60s
func FuzzHeaders(f *testing.F) {
	for _, seed := range [][2]string{
		{"order-7", "12"}, {"", "0"}, {" ", "-1"}, {"k\x00", "+5"}, {strings.Repeat("k", 256), "99999999999999999999"},
		{"é", "0x10"}, {"a b", " 7"}, {"\x7f", "9223372036854775807"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, key, token string) {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req.Header["Idempotency-Key"] = []string{key}
		req.Header["Fencing-Token"] = []string{token}
		gotKey, keyErr := idempotencyKey(req)
		if ok := printableKey.MatchString(key); ok != (keyErr == nil) || (ok && gotKey != key) {
			t.Fatalf("Idempotency-Key %q: got %q, %v; well formed: %v", key, gotKey, keyErr, ok)
		}
		if keyErr != nil && account.ErrorCode(keyErr) != account.CodeInvalidIdempotencyKey {
			t.Fatalf("Idempotency-Key %q: code %q", key, account.ErrorCode(keyErr))
		}
		gotToken, tokenErr := fencingToken(req)
		n, parseErr := strconv.ParseInt(token, 10, 64)
		wellFormed := parseErr == nil && n > 0
		if wellFormed != (tokenErr == nil) || (wellFormed && gotToken != n) {
			t.Fatalf("Fencing-Token %q: got %d, %v; well formed: %v", token, gotToken, tokenErr, wellFormed)
		}
		if tokenErr != nil && account.ErrorCode(tokenErr) != codeInvalidFencingToken {
			t.Fatalf("Fencing-Token %q: code %q", token, account.ErrorCode(tokenErr))
		}
	})
}
