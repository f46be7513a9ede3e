package client

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lockbank/lockbank/internal/contract"
)

// TestTypesMatchTheContract checks the client's wire types against the
// OpenAPI document by hand rather than generating them (oapi-codegen): the
// client's types carry what a Go caller wants (Durations, a Lease that knows
// its own deadline), which generated types would not. Every field the
// client decodes is one the document defines, and every field the document
// requires the client decodes. (The requests and answers themselves are
// validated in every test through internal/bankdtest.)
func TestTypesMatchTheContract(t *testing.T) {
	t.Parallel()
	doc, _, err := contract.Document()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		schema string
		value  any
	}{
		{"Account", Account{}},
		{"Entry", Entry{}},
		{"Lease", leaseWire{}},
		{"Problem", problem{}},
	} {
		t.Run(tt.schema, func(t *testing.T) {
			s := doc.Components.Schemas[tt.schema].Value
			fields := jsonNames(reflect.TypeOf(tt.value))
			for _, f := range fields {
				if _, ok := s.Properties[f]; !ok {
					t.Errorf("the client decodes %q, which the document's %s lacks", f, tt.schema)
				}
			}
			for _, name := range s.Required {
				if !slices.Contains(fields, name) {
					t.Errorf("the document's %s requires %q, which the client drops", tt.schema, name)
				}
			}
		})
	}
}

func jsonNames(typ reflect.Type) []string {
	var names []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}
