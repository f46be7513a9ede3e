package loadgen

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
)

// WriteFiles writes res to dir as results.json, and each scenario's plot as
// bench-<scenario>.svg.
func WriteFiles(dir string, res Result) error {
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	for _, scenario := range scenarios(res.Runs) {
		var buf bytes.Buffer
		WritePlot(&buf, scenario, res.Runs)
		if err := os.WriteFile(filepath.Join(dir, "bench-"+scenario+".svg"), buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func scenarios(runs []Run) []string {
	var out []string
	for _, r := range runs {
		if !slices.Contains(out, r.Scenario) {
			out = append(out, r.Scenario)
		}
	}
	return out
}
