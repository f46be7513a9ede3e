package history

import (
	"context"

	"github.com/lockbank/lockbank/client"
)

// Account is an account and its whole ledger as read from a node: after a
// run, the truth its history is checked against.
type Account struct {
	ID      int64
	Opening int64
	Balance int64
	Entries []Entry
}

// Entry is one ledger entry, as the checker needs it.
type Entry struct {
	ID      int64
	Kind    string
	Amount  int64
	Balance int64 // after the entry
	Key     string
	Token   int64 // 0 when the write carried none
}

// Deposited is the sum of the ledger's deposits.
func (a Account) Deposited() int64 { return a.sum("deposit") }

// Withdrawn is the sum of the ledger's withdrawals.
func (a Account) Withdrawn() int64 { return a.sum("withdrawal") }

func (a Account) sum(kind string) int64 {
	var total int64
	for _, e := range a.Entries {
		if e.Kind == kind {
			total += e.Amount
		}
	}
	return total
}

// Consistent reports whether the balance is what the ledger says it must
// be: the opening balance plus the deposits minus the withdrawals.
func (a Account) Consistent() bool { return a.Balance == a.Opening+a.Deposited()-a.Withdrawn() }

// ReadAccount reads account id and its whole ledger through api.
func ReadAccount(ctx context.Context, api *client.Client, id int64) (Account, error) {
	acct, err := api.Account(ctx, id)
	if err != nil {
		return Account{}, err
	}
	a := Account{ID: id, Opening: acct.OpeningBalance, Balance: acct.Balance}
	for e, err := range api.Ledger(ctx, id, client.PageSize(10000)) {
		if err != nil {
			return a, err
		}
		a.Entries = append(a.Entries, entryOf(e))
	}
	return a, nil
}

func entryOf(e client.Entry) Entry {
	return Entry{ID: e.ID, Kind: e.Kind, Amount: e.Amount, Balance: e.Balance, Key: e.IdempotencyKey, Token: e.FenceToken}
}
