package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockbank/lockbank/client"
	"github.com/lockbank/lockbank/internal/cluster"
	"github.com/lockbank/lockbank/internal/history"
)

type raceFlags struct {
	strategies string
	clients    int
	balance    int64
	amount     int64
	rounds     int
	hold       time.Duration
}

func (r *raceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.strategies, "strategies", "unsafe,row,lease", "strategies to race, comma-separated (unsafe, row, lease, lease-nofence)")
	fs.IntVar(&r.clients, "clients", 2, "clients released at the same instant, spread over the nodes (1-1000)")
	fs.Int64Var(&r.balance, "balance", 5000, "opening balance of each fresh account")
	fs.Int64Var(&r.amount, "amount", 0, "each client's withdrawal (default: the whole balance)")
	fs.IntVar(&r.rounds, "rounds", 1, "rounds per strategy, aggregated")
	fs.DurationVar(&r.hold, "hold", 200*time.Millisecond, "demo pause between each withdrawal's read and write (hold_ms), to make the race reliable; 0 for none")
}

// Verdicts of one account after a race.
const (
	verdictSafe        = "SAFE"
	verdictDoubleSpend = "DOUBLE SPEND" // more withdrawn than there ever was
	verdictLostUpdate  = "LOST UPDATE"  // the balance disagrees with the ledger
)

// safeStrategies must be SAFE in every round for bankctl race to exit 0.
var safeStrategies = map[string]bool{"row": true, "lease": true}

type raceRow struct {
	Strategy  string         `json:"strategy"`
	Rounds    int            `json:"rounds"`
	Attempts  int            `json:"attempts"`
	Succeeded int            `json:"succeeded"`
	Rejected  map[string]int `json:"rejected"`
	Balance   int64          `json:"final_balance"` // summed over rounds
	Withdrawn int64          `json:"withdrawn"`     // per the ledger, summed over rounds
	Opening   int64          `json:"opening"`       // summed over rounds
	Verdicts  map[string]int `json:"verdicts"`
	Verdict   string         `json:"verdict"` // the worst of the rounds
}

func (f raceFlags) validate() error {
	switch {
	case f.clients < 1 || f.clients > 1000:
		return usageError("--clients must be from 1 to 1000")
	case f.rounds < 1 || f.rounds > 1000:
		return usageError("--rounds must be from 1 to 1000")
	case f.balance < 1 || f.amount < 0:
		return usageError("--balance must be positive and --amount not negative")
	case f.hold < 0 || f.hold > 30*time.Second:
		return usageError("--hold must be from 0 to 30s")
	}
	for _, s := range strings.Split(f.strategies, ",") {
		if s != "unsafe" && s != "row" && s != "lease" && s != "lease-nofence" {
			return usageError("--strategies: %q is not one of unsafe, row, lease, lease-nofence", s)
		}
	}
	return nil
}

func (f raceFlags) run(ctx context.Context, c *cluster.Cluster, tl *timeline) error {
	amount := f.amount
	if amount == 0 {
		amount = f.balance
	}
	strategies := strings.Split(f.strategies, ",")
	tl.note("race: %d clients at once, each withdrawing %d from a fresh account of %d, hold %s, %d round(s) per strategy",
		f.clients, amount, f.balance, f.hold, f.rounds)

	var rows []raceRow
	for _, strategy := range strategies {
		row := raceRow{Strategy: strategy, Rejected: map[string]int{}, Verdicts: map[string]int{}}
		for round := 1; round <= f.rounds; round++ {
			if err := raceRound(ctx, c, tl, f, strategy, amount, &row); err != nil {
				return &exitError{code: exitTrouble, msg: err.Error()}
			}
		}
		row.Verdict = worst(row.Verdicts)
		rows = append(rows, row)
	}
	printRaceTable(tl, rows)
	tl.result(rows)
	for _, r := range rows {
		if !safeStrategies[r.Strategy] && r.Verdict == verdictSafe {
			tl.note("%s showed no race this time: the requests did not overlap. A longer --hold (or more --clients) makes them collide.", r.Strategy)
		}
	}

	for _, r := range rows {
		if safeStrategies[r.Strategy] && r.Verdict != verdictSafe {
			return &exitError{code: exitUnsafe, msg: fmt.Sprintf("%s was not safe: %v", r.Strategy, r.Verdicts)}
		}
	}
	return nil
}

func raceRound(ctx context.Context, c *cluster.Cluster, tl *timeline, f raceFlags, strategy string, amount int64, row *raceRow) error {
	acct, err := c.Nodes[0].API.CreateAccount(ctx, "race-"+strategy, f.balance)
	if err != nil {
		return err
	}
	id := acct.ID
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var done atomic.Int64
	codes := map[string]int{}
	for i := range f.clients {
		n := c.Nodes[i%len(c.Nodes)]
		wg.Go(func() {
			<-start
			a := withdraw(ctx, n.API, id, client.Withdrawal{Amount: amount, Strategy: strategy, Hold: f.hold})
			code := a.code
			switch {
			case a.status == 0:
				code = "transport_error"
			case a.status != 201 && code == "":
				code = fmt.Sprintf("http_%d", a.status)
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
			tl.showProgress(strategy, int(done.Add(1)), f.clients)
		})
	}
	close(start) // every client at the same instant
	wg.Wait()

	st, err := history.ReadAccount(ctx, c.Nodes[len(c.Nodes)-1].API, id)
	if err != nil {
		return err
	}
	verdict := verdictSafe
	switch {
	case st.Withdrawn() > st.Opening+st.Deposited():
		verdict = verdictDoubleSpend
	case !st.Consistent() || st.Balance < 0:
		verdict = verdictLostUpdate
	}
	row.Rounds++
	row.Attempts += f.clients
	row.Succeeded += codes[""]
	for code, n := range codes {
		if code != "" {
			row.Rejected[code] += n
		}
	}
	row.Balance += st.Balance
	row.Withdrawn += st.Withdrawn()
	row.Opening += st.Opening
	row.Verdicts[verdict]++
	t := good
	if verdict != verdictSafe {
		t = bad
	}
	tl.event("", fmt.Sprintf("%s: account %d, %d/%d withdrawals ok", strategy, id, codes[""], f.clients), 0,
		fmt.Sprintf("balance %d, withdrawn %d of %d: %s", st.Balance, st.Withdrawn(), st.Opening, verdict), t)
	return nil
}

func worst(verdicts map[string]int) string {
	for _, v := range []string{verdictDoubleSpend, verdictLostUpdate} {
		if verdicts[v] > 0 {
			return v
		}
	}
	return verdictSafe
}

func printRaceTable(tl *timeline, rows []raceRow) {
	tl.printf("\n%-14s %8s %9s  %-32s %13s %10s  %s\n", "STRATEGY", "ATTEMPTS", "SUCCEEDED", "REJECTED", "FINAL BALANCE", "WITHDRAWN", "VERDICT")
	for _, r := range rows {
		var rejected []string
		for code, n := range r.Rejected {
			rejected = append(rejected, fmt.Sprintf("%s×%d", code, n))
		}
		sort.Strings(rejected)
		rej := strings.Join(rejected, " ")
		if rej == "" {
			rej = "-"
		}
		verdict := r.Verdict
		if r.Rounds > 1 && len(r.Verdicts) > 1 {
			verdict = fmt.Sprintf("%s (%d of %d rounds)", r.Verdict, r.Verdicts[r.Verdict], r.Rounds)
		}
		t := good
		if r.Verdict != verdictSafe {
			t = bad
		}
		tl.printf("%-14s %8d %9d  %-32s %13d %10d  %s\n", r.Strategy, r.Attempts, r.Succeeded, rej, r.Balance, r.Withdrawn, tl.paint(verdict, t))
	}
	tl.printf("\nSAFE: balance = opening − withdrawals in the ledger, and no more withdrawn than there was.\n" +
		"DOUBLE SPEND: the ledger paid out more than the account ever held. LOST UPDATE: the balance disagrees with the ledger.\n")
}
