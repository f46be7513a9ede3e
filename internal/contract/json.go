package contract

import "encoding/json"

// decodeJSON decodes b into v and also returns it as the generic value that
// openapi3's schema validation takes.
func decodeJSON(b []byte, v any) (any, error) {
	if err := json.Unmarshal(b, v); err != nil {
		return nil, err
	}
	var generic any
	err := json.Unmarshal(b, &generic)
	return generic, err
}
