package history

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
)

// Outage is the write outage around one fault: from the first write that
// failed (refused for want of the database, or unknown) after the fault
// began, to the first write invoked after that one that succeeded.
type Outage struct {
	Fault     int     `json:"fault"` // its index in the run's faults
	Kind      string  `json:"kind"`
	Node      string  `json:"node"`
	FirstFail float64 `json:"first_fail"`
	FirstOK   float64 `json:"first_ok"`
	Seconds   float64 `json:"seconds"`
}

// Outages measures the write outage of every fault of the given kinds. A
// fault no write failed in has none.
func Outages(ops []Op, faults []Fault, kinds ...string) []Outage {
	type attempt struct {
		Attempt
		ok bool
	}
	var attempts []attempt
	for _, o := range ops {
		if !IsWrite(o) {
			continue
		}
		for _, a := range o.Attempts {
			failed := a.Outcome == OutcomeInfo || a.Code == "database_unavailable"
			if a.Outcome == OutcomeOK || failed {
				attempts = append(attempts, attempt{a, a.Outcome == OutcomeOK})
			}
		}
	}
	sort.Slice(attempts, func(i, j int) bool { return attempts[i].Invoke < attempts[j].Invoke })
	var out []Outage
	for i, ft := range faults {
		if ft.Error != "" || !contains(kinds, ft.Kind) {
			continue
		}
		o := Outage{Fault: i, Kind: ft.Kind, Node: ft.Node, FirstFail: -1}
		for _, a := range attempts {
			switch {
			case a.Invoke < ft.Start:
			case o.FirstFail < 0 && !a.ok:
				o.FirstFail = a.Invoke
			case o.FirstFail >= 0 && a.ok && (o.FirstOK == 0 || a.Complete < o.FirstOK):
				o.FirstOK = a.Complete
			}
		}
		if o.FirstFail >= 0 && o.FirstOK > 0 {
			o.Seconds = o.FirstOK - o.FirstFail
			out = append(out, o)
		}
	}
	return out
}

// Unknowns counts the writes one attempt of which had an unknown outcome,
// by how they settled: "ok" (a keyed retry was answered: applied once),
// "applied" and "not-applied" (still unknown after every retry; the final
// ledger tells); and "internal", the attempts answered 500, which must be
// none.
func Unknowns(ops []Op, finals []Account) map[string]int {
	inLedger := map[string]bool{}
	for _, a := range finals {
		for _, e := range a.Entries {
			inLedger[e.Key] = true
		}
	}
	out := map[string]int{}
	for _, o := range ops {
		if !IsWrite(o) {
			continue
		}
		unknown := false
		for _, a := range o.Attempts {
			unknown = unknown || a.Outcome == OutcomeInfo
			if a.Code == "internal" {
				out["internal"]++
			}
		}
		if !unknown {
			continue
		}
		op := o
		Settle(&op)
		switch {
		case op.Outcome == OutcomeOK:
			out["ok"]++
		case inLedger[op.Key]:
			out["applied"]++
		default:
			out["not-applied"]++
		}
	}
	return out
}

// CheckGrants reads lease_grants and says, per resource, where tokens did
// not strictly increase in the order they were granted (by granted_at,
// then token), and whether any token was granted twice. It talks to the
// database directly (url): the grants are not in bankd's API.
func CheckGrants(ctx context.Context, url string) (grants int, violations []Violation, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close(ctx)
	var twice int
	if err := conn.QueryRow(ctx, `SELECT count(*) - count(DISTINCT token) FROM lease_grants`).Scan(&twice); err != nil {
		return 0, nil, err
	}
	if twice > 0 {
		violations = append(violations, Violation{Rule: RuleGrantTokens, Detail: fmt.Sprintf("%d tokens granted twice", twice)})
	}
	rows, _ := conn.Query(ctx, `SELECT resource, token, lag(token) OVER w, count(*) OVER () FROM lease_grants
		WINDOW w AS (PARTITION BY resource ORDER BY granted_at, token) ORDER BY resource, granted_at, token`)
	var (
		resource    string
		token, n    int64
		prev        *int64
		bad         int
		firstDetail string
	)
	_, err = pgx.ForEachRow(rows, []any{&resource, &token, &prev, &n}, func() error {
		grants = int(n)
		if prev != nil && token <= *prev {
			bad++
			if firstDetail == "" {
				firstDetail = fmt.Sprintf("%s: token %d granted after %d", resource, token, *prev)
			}
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if bad > 0 {
		violations = append(violations, Violation{Rule: RuleGrantTokens, Detail: fmt.Sprintf("%d grants not above the one before on their resource; first: %s", bad, firstDetail)})
	}
	return grants, violations, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
