package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/lockbank/lockbank/account"
)

// maxBodyBytes bounds every request body; a larger one is refused whole.
const maxBodyBytes = 64 << 10

// fieldCodes names the code for a value of the wrong JSON type in a field
// whose problems have their own code; any other field is invalid_request.
var fieldCodes = map[string]string{
	"amount":  account.CodeInvalidAmount,
	"balance": account.CodeInvalidAmount,
}

// decode reads a JSON request body into a T: application/json only, at most
// maxBodyBytes, exactly one object, no unknown or duplicate fields, numbers
// only where the type says so (so 5.0, 5e2 and "5" are not an int64).
// Errors are *account.Error values that writeError turns into problem+json.
func decode[T any](w http.ResponseWriter, r *http.Request) (T, error) {
	var v T
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" || (params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
		return v, &account.Error{Code: codeUnsupportedMediaType, Message: "send the body as Content-Type: application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return v, &account.Error{Code: codeBodyTooLarge, Message: fmt.Sprintf("the body must be at most %d bytes", maxBodyBytes)}
		}
		return v, &account.Error{Code: codeMalformedJSON, Message: "the body could not be read"}
	}
	if err := checkDuplicateKeys(body); err != nil {
		return v, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return v, &account.Error{Code: codeMalformedJSON, Message: "the body must hold exactly one JSON value"}
	}
	return v, nil
}

func decodeError(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return &account.Error{Code: codeMalformedJSON, Message: "the body is empty; send a JSON object"}
	case errors.As(err, &syntaxErr):
		return &account.Error{Code: codeMalformedJSON, Message: fmt.Sprintf("invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &account.Error{Code: codeMalformedJSON, Message: "the JSON body ends too early"}
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return &account.Error{Code: codeMalformedJSON, Message: "the body must be a JSON object"}
	case errors.As(err, &typeErr):
		code, ok := fieldCodes[typeErr.Field]
		if !ok {
			code = account.CodeInvalidRequest
		}
		return &account.Error{Code: code, Message: fmt.Sprintf("field %q must be %s, not a JSON %s", typeErr.Field, describeType(typeErr.Type.Kind().String()), typeErr.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return &account.Error{Code: codeUnknownField, Message: strings.TrimPrefix(err.Error(), "json: ") + " is not accepted here"}
	default:
		return &account.Error{Code: codeMalformedJSON, Message: "the body is not valid JSON"}
	}
}

func describeType(kind string) string {
	switch kind {
	case "int", "int64", "int32":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	}
	return "a " + kind
}

// checkDuplicateKeys refuses an object that names a key twice: encoding/json
// would silently keep the last one, and {"amount":1,"amount":9} must not
// mean whatever a proxy and bankd each happen to pick.
func checkDuplicateKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // next string token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // syntax errors are reported by the real decode
		}
		top := (*frame)(nil)
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if key, ok := tok.(string); ok {
				if top.keys[key] {
					return &account.Error{Code: codeMalformedJSON, Message: fmt.Sprintf("duplicate key %q", key)}
				}
				top.keys[key] = true
				top.expect = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: in an object, a key comes next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

// jsonEncode writes v as one line of JSON.
func jsonEncode(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// encode writes v as a JSON response with status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = jsonEncode(w, v)
}
