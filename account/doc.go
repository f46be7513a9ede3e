// Package account is the protected resource of lockbank: accounts, their
// append-only ledger, and the withdrawal strategies that either show the race
// (unsafe, lease-nofence) or prevent it (row, lease).
//
// Every method runs in transactions that touch one account's rows only, and
// every balance change writes its ledger entry in the same transaction, so
// that balance = opening balance + deposits - withdrawals at every commit.
//
// # Paths
//
// Deposit and Withdraw check a change and route it (change.go) down one of
// six paths, which the files follow:
//
//	change                                         path         file
//	row change (a deposit, or a row withdrawal)
//	without a hold:
//	  alone in its batch, with no Fencing-Token    lone         lone.go
//	  queued behind others, with a Fencing-Token,
//	  or left undecided by the lone statement      row batch    batch.go
//	lease withdrawal without a hold:
//	  alone, on an account this node keeps no
//	  lease of                                     lone lease   lone.go
//	  queued behind others, kept, or left
//	  undecided by the lone lease statement        lease batch  lease.go, then batch.go
//	unsafe; row change with a hold                 demo         demo.go
//	lease with a hold; lease-nofence               lease demo   demo.go, lease from lease.go
//
// What each costs in round trips ([ ] is one pipeline) and commits, and which
// locks it holds until its COMMIT:
//
//	path         round trips                                     commits  locks held
//	lone         1: the statement                                1        row, from its UPDATE
//	lone lease   1: the statement, its lease granted and         1        lease row, from the grant's
//	                released inside it                                    UPDATE; row from the write
//	row batch    2: [BEGIN, FOR UPDATE, keys] [writes, COMMIT]   1        row, from FOR UPDATE
//	lease batch  2: [BEGIN, grant or kept lease's fence, read,   1        lease; lease row from the
//	                keys] [writes, release if idle, COMMIT]               grant or fence; row from
//	                (held by another node: exists, wait+grant,            the write
//	                then the same with the fence; 4, 2 commits)
//	demo         5: BEGIN, read, UPDATE, entry, COMMIT           1        row, from UPDATE (unsafe)
//	                                                                      or FOR UPDATE read (row)
//	lease demo   9: exists, grant, read, BEGIN, fence, UPDATE,   3        lease; lease row from the
//	                entry, COMMIT, release (8 with no fence)              fence; row from UPDATE
//
// A lease batch keeps its lease for the node's next batch of the account
// while more are queued and no other node waits (sticky.go); else the
// release rides in its commit.
//
// "row" is the account's row lock. "lease" is the account's lease in
// lockmgr, held from grant to release; "lease row" the fence's FOR SHARE on
// the lease's row, which holds off a newer grant until the write commits.
// "keys" reads the stored outcomes of the batch's idempotency keys (left out
// when none has one). A batch adds a round trip to replay stored successes,
// and one per distinct Fencing-Token (its fence, which takes the lease row
// too); a demonstration adds two for a key (its lookup and its record) and
// one for a Fencing-Token. "exists" checks the account before a lease named
// after it is taken; "grant" is one round trip when the lease is free, else
// it waits (lockmgr's Acquire). Counts are for a connection that has
// prepared the statements before (pgx caches them per connection).
//
// The lone statement is an autocommitted UPDATE that changes the balance
// only if the result is not negative, and appends the entry and stores the
// idempotency record in the same statement. What it cannot decide — a
// refusal, a stored outcome to replay, a missing account, an overflow, a
// conflict — it leaves unwritten to a row batch of one: 1 + 2 round trips.
// The lone lease statement is the same statement under a lease for itself
// (lockmgr's GrantInStatement): granted, and released, by one update of the
// lease row whose lock holds off any other grant until the statement
// commits. A lease held by another node, or anything the lone statement
// leaves undecided, goes to a lease batch of one.
// A row batch is retried when PostgreSQL aborts it for concurrency alone. A
// lease batch reads the balance without a lock and writes only if it is
// still the one read: a row writer takes no lease and may have moved it, and
// then the batch reads again while the lease lasts; a lease the fence
// refuses (it ran out, or a newer one was granted) is replaced by a fresh one
// while --lease-wait lasts. The demonstrations run a statement per step so
// that the hold falls between the read and the write; unsafe and
// lease-nofence write an absolute balance computed from that read.
//
// # Combining
//
// The row-strategy changes of one account are combined, and so are its lease
// withdrawals: while one transaction holds the account's row lock (or its
// lease), the changes that arrive for the same account wait in a queue in
// this process (queue.go), and the next transaction applies all of them in
// arrival order — one row lock (or one lease), one UPDATE and one commit for
// many ledger entries. A hot account then costs the database one commit per
// batch instead of one per change, and no more than one of this node's
// connections ever queues on the account's row lock: hundreds of clients on
// one account wait here, not in PostgreSQL's lock manager.
//
// Every change still gets its own ledger entry, its own balance check against
// the balance the entries before it leave, its own fence check and its own
// idempotency record, in the same transaction as the others; the transaction
// touches one account only (invariant 8). If it fails, every change in it
// fails alike.
//
// # Errors
//
// A refusal is an *Error, whose Code is one of the Code constants; each
// method says which it returns. Besides its refusals, every Service method
// may fail because of the database, and says how: CodeLockTimeout (an
// *Error: a lock wait ran out, or conflicts with other transactions
// outlasted the retries), an error for which IsUnavailable is true (the
// database could not serve the request; nothing was committed), or, for a
// change only, ErrOutcomeUnknown (it may or may not have committed).
// Anything else is a bug.
package account
