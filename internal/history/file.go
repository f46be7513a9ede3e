package history

import (
	"encoding/json"
	"os"
)

// WriteFile writes a history to path as JSON Lines: the operations (with
// their attempts), then the faults.
func WriteFile(path string, ops []Op, faults []Fault) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, o := range ops {
		_ = enc.Encode(o)
	}
	for _, ft := range faults {
		_ = enc.Encode(ft)
	}
	return f.Close()
}
