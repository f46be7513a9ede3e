package history

import (
	"context"

	"github.com/lockbank/lockbank/client"
)

// Summary is a run in numbers, and its verdict.
type Summary struct {
	Valid         bool           `json:"valid"`
	Operations    int            `json:"operations"`
	Outcomes      map[string]int `json:"outcomes"`
	Codes         map[string]int `json:"codes"` // of every attempt that was not ok
	Faults        map[string]int `json:"faults"`
	FenceRejected int            `json:"fence_rejections"` // attempts refused stale_fencing_token or lease_expired
	PauseProbes   int            `json:"pause_probes"`     // pause faults that froze a node inside a lease
	ProbesFenced  int            `json:"pause_probes_fenced"`
	Retried       int            `json:"retried_writes"` // writes that took more than one attempt
	Attempts      int            `json:"write_attempts"`
	Replays       int            `json:"replays"` // attempts answered with the stored outcome of an earlier one
	// Writes an attempt of which had an unknown outcome, by how they
	// settled, and the 500s (see Unknowns); the write outage of every
	// failover (see Outages).
	Unknowns       map[string]int `json:"unknowns"`
	Outages        []Outage       `json:"outages,omitempty"`
	Violations     []Violation    `json:"violations"`
	ViolationCount int            `json:"violation_count"`
}

// Summarize counts outcomes, codes and fence refusals, the last over every
// attempt (a refused attempt may have been retried), and the faults that
// were injected. The verdict (Valid, Violations) is Check's to fill in.
func Summarize(ops []Op, faults []Fault) Summary {
	res := Summary{Operations: len(ops), Outcomes: map[string]int{}, Codes: map[string]int{}, Faults: map[string]int{}}
	for _, o := range ops {
		res.Outcomes[o.Outcome]++
		attempts := o.Attempts
		if len(attempts) == 0 { // a read: its one request
			attempts = []Attempt{{Outcome: o.Outcome, Code: o.Code}}
		} else {
			res.Attempts += len(attempts)
			if len(attempts) > 1 {
				res.Retried++
			}
		}
		for _, a := range attempts {
			if a.Code != "" {
				res.Codes[a.Code]++
			}
			if IsFenceRefusal(a.Code) {
				res.FenceRejected++
			}
			if a.Replayed {
				res.Replays++
			}
		}
	}
	for _, ft := range faults {
		if ft.Error != "" {
			continue
		}
		res.Faults[ft.Kind]++
		if ft.Kind == "pause" {
			res.PauseProbes++
			if IsFenceRefusal(ft.LateWrite) {
				res.ProbesFenced++
			}
		}
	}
	return res
}

// IsFenceRefusal reports whether code is the answer to a write that the
// fence refused.
func IsFenceRefusal(code string) bool {
	return code == "stale_fencing_token" || code == "lease_expired"
}

// Judge reads the final state of accounts through api and judges the
// history ops against it: the summary of ops and faults, with the verdict
// (Valid, the number of violations and the first ten of them).
func Judge(ctx context.Context, api *client.Client, accounts []int64, ops []Op, faults []Fault) (Summary, error) {
	var finals []Account
	for _, id := range accounts {
		final, err := ReadAccount(ctx, api, id)
		if err != nil {
			return Summary{}, err
		}
		finals = append(finals, final)
	}
	s := Summarize(ops, faults)
	s.Unknowns = Unknowns(ops, finals)
	s.Outages = Outages(ops, faults, "failover", "standby-down")
	all := Check(ops, finals)
	s.Valid, s.ViolationCount, s.Violations = len(all) == 0, len(all), all[:min(len(all), 10)]
	return s, nil
}
