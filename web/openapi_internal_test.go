package web

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// routedOnlyByChi are the codes chi's NotFound and MethodNotAllowed answer
// for paths and methods that are not in the document, so no operation
// lists them; the schema of every problem does.
var routedOnlyByChi = []string{codeNotFound, codeMethodNotAllowed}

// TestOpenAPIHasEveryProblemCode holds problemTypes, the one table of codes,
// and openapi.yaml to each other: every code is in the Problem schema, every
// code an operation can answer is listed under the table's status, and the
// document lists no code under another status or outside the table.
func TestOpenAPIHasEveryProblemCode(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	problemCodes := enumOf(doc.Components.Schemas["Problem"].Value.Properties["code"])
	listed := map[string]map[int]bool{} // code → statuses the operations list it under
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, resp := range op.Responses.Map() {
				n, err := strconv.Atoi(status)
				if err != nil {
					t.Errorf("%s %s: response %q is not a status", method, path, status)
					continue
				}
				for _, media := range resp.Value.Content {
					for _, part := range media.Schema.Value.AllOf {
						if part.Ref != "" {
							continue // the Problem schema, with every code
						}
						for _, code := range enumOf(part.Value.Properties["code"]) {
							if listed[code] == nil {
								listed[code] = map[int]bool{}
							}
							listed[code][n] = true
						}
					}
				}
			}
		}
	}
	for code, pt := range problemTypes {
		if !slices.Contains(problemCodes, code) {
			t.Errorf("code %s (%d) is not in the Problem schema's enum", code, pt.status)
		}
		if !listed[code][pt.status] && !slices.Contains(routedOnlyByChi, code) {
			t.Errorf("code %s is listed under no operation's %d response", code, pt.status)
		}
		for status := range listed[code] {
			if status != pt.status {
				t.Errorf("code %s is listed under %d; problemTypes says %d", code, status, pt.status)
			}
		}
	}
	for _, code := range problemCodes {
		if _, ok := problemTypes[code]; !ok {
			t.Errorf("the Problem schema lists %s, which problemTypes does not have", code)
		}
	}
	for code := range listed {
		if _, ok := problemTypes[code]; !ok {
			t.Errorf("an operation lists %s, which problemTypes does not have", code)
		}
	}
}

// TestOpenAPISaysWhenEachCode: the Problem schema's code says when each of
// its codes is answered, one "- code: when" line each (docs/api.md does
// not repeat them, so the document is where a reader finds them).
func TestOpenAPISaysWhenEachCode(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	code := doc.Components.Schemas["Problem"].Value.Properties["code"].Value
	said := map[string]bool{}
	for _, line := range strings.Split(code.Description, "\n") {
		names, when, ok := strings.Cut(strings.TrimPrefix(line, "- "), ": ")
		if !ok || !strings.HasPrefix(line, "- ") || when == "" {
			continue
		}
		for _, name := range strings.Split(names, ", ") {
			said[name] = true
		}
	}
	for _, c := range enumOf(doc.Components.Schemas["Problem"].Value.Properties["code"]) {
		if !said[c] {
			t.Errorf("the Problem schema's code does not say when %s is answered", c)
		}
	}
}

// TestOpenAPIIsValid checks the document against the OpenAPI 3.0 rules
// (references resolve, schemas and examples are well formed).
func TestOpenAPIIsValid(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Fatalf("openapi %q, want 3.0.3 (what kin-openapi validates fully)", doc.OpenAPI)
	}
}

func enumOf(s *openapi3.SchemaRef) []string {
	if s == nil || s.Value == nil {
		return nil
	}
	var out []string
	for _, v := range s.Value.Enum {
		if code, ok := v.(string); ok {
			out = append(out, code)
		}
	}
	return out
}
