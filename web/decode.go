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

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

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

// strictJSON is how every request body is read: by the upstream of
// encoding/json/v2, whose defaults are what a money API needs and
// encoding/json lacks — a member name matches a field only when it is
// exactly the field's name (encoding/json folds case, so "AMOUNT" would set
// amount), a name given twice however it is escaped is an error (encoding/json
// keeps the last), strings must be valid UTF-8, and an integer field takes
// only a JSON integer. Unknown members are refused on top of that.
var strictJSON = jsonv2.RejectUnknownMembers(true)

// decode reads a JSON request body into a T: application/json only, at most
// maxBodyBytes, exactly one JSON object, member names exactly as documented
// and each at most once, numbers only where the type says so (so 5.0, 5e2
// and "5" are not an int64). Errors are *account.Error values that
// writeError turns into problem+json.
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
	if err := jsonv2.Unmarshal(body, &v, strictJSON); err != nil {
		return v, decodeError(err)
	}
	// null decodes into a zero value without complaint; a request is an object.
	if trimmed := bytes.TrimLeft(body, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return v, &account.Error{Code: codeMalformedJSON, Message: "the body must be a JSON object"}
	}
	return v, nil
}

// decodeError turns the decoder's error into a refusal with a stable code:
// broken JSON (syntax, a repeated name, invalid UTF-8) is malformed_json, a
// name that is not exactly a field's is unknown_field, and a value of the
// wrong type is its field's code.
func decodeError(err error) error {
	var (
		syntaxErr   *jsontext.SyntacticError
		semanticErr *jsonv2.SemanticError
	)
	isSyntax := errors.As(err, &syntaxErr)
	switch {
	case errors.Is(err, jsontext.ErrDuplicateName):
		return &account.Error{Code: codeMalformedJSON, Message: fmt.Sprintf("the member %q is given more than once", memberName(err))}
	case isSyntax && errors.Is(err, io.ErrUnexpectedEOF) && syntaxErr.ByteOffset == 0:
		return &account.Error{Code: codeMalformedJSON, Message: "the body is empty; send a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &account.Error{Code: codeMalformedJSON, Message: "the JSON body ends too early"}
	case isSyntax:
		return &account.Error{Code: codeMalformedJSON, Message: fmt.Sprintf("invalid JSON at byte %d: %v", syntaxErr.ByteOffset, syntaxErr.Err)}
	case errors.As(err, &semanticErr) && errors.Is(err, jsonv2.ErrUnknownName):
		return &account.Error{Code: codeUnknownField, Message: fmt.Sprintf("unknown field %q is not accepted here (names are case-sensitive)", memberName(err))}
	case errors.As(err, &semanticErr) && semanticErr.JSONPointer == "":
		return &account.Error{Code: codeMalformedJSON, Message: "the body must be a JSON object"}
	case errors.As(err, &semanticErr):
		field := memberName(err)
		code, ok := fieldCodes[field]
		if !ok {
			code = account.CodeInvalidRequest
		}
		return &account.Error{Code: code, Message: fmt.Sprintf("field %q must be %s, not %s", field, describeType(semanticErr), describeValue(semanticErr))}
	default:
		return &account.Error{Code: codeMalformedJSON, Message: "the body is not valid JSON"}
	}
}

// memberName is the top-level member an error is about, unescaped.
func memberName(err error) string {
	var (
		syntaxErr   *jsontext.SyntacticError
		semanticErr *jsonv2.SemanticError
		pointer     jsontext.Pointer
	)
	switch {
	case errors.As(err, &syntaxErr):
		pointer = syntaxErr.JSONPointer
	case errors.As(err, &semanticErr):
		pointer = semanticErr.JSONPointer
	}
	for name := range pointer.Tokens() {
		return name
	}
	return ""
}

func describeType(e *jsonv2.SemanticError) string {
	if e.GoType == nil {
		return "another type"
	}
	switch e.GoType.Kind().String() {
	case "int", "int64", "int32":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	}
	return "a " + e.GoType.Kind().String()
}

func describeValue(e *jsonv2.SemanticError) string {
	switch e.JSONKind {
	case '"':
		return "a JSON string"
	case '0':
		if e.JSONValue != nil {
			return "the JSON number " + string(e.JSONValue)
		}
		return "a JSON number"
	case 't', 'f':
		return "a JSON boolean"
	case '{':
		return "a JSON object"
	case '[':
		return "a JSON array"
	}
	return "that JSON value"
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
