// Package lockmgr is a lease manager on PostgreSQL with fencing tokens: a
// cluster-wide lock that any Go program with a pgxpool can use.
//
// A lease is a lock that expires. Whoever holds a live lease on a resource
// holds the lock; a holder that crashes blocks others only until its lease
// runs out (its TTL). Liveness is decided by the database's clock alone; the
// holder also keeps a local, earlier deadline (Lease.Deadline) after which it
// stops acting as holder.
//
// Expiry alone is not safety: a holder that pauses (GC, swap, a frozen VM)
// past its lease wakes up believing it still holds the lock. So every grant
// carries a fencing token from one database-wide sequence: per resource,
// tokens strictly increase with every grant, never change on renewal, and are
// never reused. The holder sends its token with every write, and the
// protected data checks it (CheckFence) in the same transaction as the write,
// rejecting a token that is no longer the newest live grant.
//
// Renew and Release act only on the caller's own grant, named by its secret
// lease id; releasing twice is harmless. A Manager acting for an owner (As,
// say the name of an API key) records the owner with each grant, and then
// the lease id alone is not enough: only the same owner renews or releases. Acquire waits without polling: it
// wakes on a release (LISTEN/NOTIFY on a dedicated connection) or, at the
// latest, when the current lease runs out. Callers of one Manager waiting
// for one resource are served first come, first served: only the first of
// them asks the database, and a release through the Manager hands the lock
// on to the next at once (the database still decides who gets it). A
// release sends its notification only when some Manager waits for the
// resource, so uncontended locks never pay for one.
//
// TryAcquire is one round trip; when the lock is held it writes nothing, so
// waiters asking cost the database no transaction and no WAL flush.
//
// Prune keeps the lock tables from growing forever: it deletes the rows of
// resources whose last lease ran out more than a retention ago and grants
// older than it (each resource's newest excepted). Tokens come from the
// sequence, not the rows, so a pruned resource's next token is still above
// all earlier ones; a token whose history was pruned is refused by the fence
// as never issued (ErrTokenMismatch), never accepted.
//
// The database must be migrated with package migrations.
package lockmgr
