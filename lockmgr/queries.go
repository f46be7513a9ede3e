package lockmgr

// Every statement of the package, with the lock it takes and why. Time is
// always the database's: a grant is stamped clock_timestamp() once it holds
// the lease's row (after any wait for it, so no lease is born expired), and
// judges whether the old lease ran out by now(), its statement's start, so
// that it never takes over early; clock_timestamp() also judges whether a
// lease is live at the instant a write is fenced or a renewal is made.

const leaseColumns = `resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms`

// Grants a lease in one round trip (function lockmgr_try_acquire, migrations
// 00003 to 00006; $5 is the owner, NULL for none): takes over a lease that has
// run out or been released, makes the first grant of a new resource, or
// reports the holder. Taking over locks the row (FOR UPDATE), so two
// takeovers serialize and the loser reports the winner, and a takeover waits
// for a fenced writer's FOR SHARE; the token is drawn and the grant stamped
// after any wait for that lock, so the token is above every token granted
// before and the lease lasts its whole TTL from its grant. Reporting a holder
// only reads: no transaction id, no token, no WAL flush, however often
// waiters ask.
//
// ran_out reads the row as it was when the statement began (the statement's
// snapshot; the function's own statements see later ones): whether the
// lease it replaces ran out rather than being released, which a release
// tells by cutting expires_at short of acquired_at + ttl. Only for the
// takeovers metric and log: a lease renewed past its first TTL and then
// released also reads as run out.
const sqlTryAcquire = `
SELECT granted, ` + leaseColumns + `, db_now,
       coalesce((SELECT p.expires_at >= p.acquired_at + p.ttl_ms * interval '1 millisecond'
                 FROM leases p WHERE p.resource = $1), false) AS ran_out
FROM lockmgr_try_acquire($1, $2, $3, $4, $5)`

// Who holds a resource, and the database's clock to measure the wait by.
const sqlHolder = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE resource = $1`

// Renews only the caller's own grant — its lease id and its owner ($4, NULL
// for none) — and only while it is live: a lease that ran out may already
// belong to someone else in spirit, even if no one took it yet. The token is
// kept.
const sqlRenew = `
UPDATE leases
SET expires_at = clock_timestamp() + $3 * interval '1 millisecond', ttl_ms = $3
WHERE resource = $1 AND lease_id = $2 AND owner IS NOT DISTINCT FROM $4 AND expires_at > clock_timestamp()
RETURNING ` + leaseColumns

// Releases the caller's own grant, named by its lease id and owner ($3, NULL
// for none) (expires it now, keeping the row as the record of the newest
// grant). Releasing a lease that already ran out or was
// released matches too: releasing twice is harmless. A newer grant has
// another lease_id, so it is never touched. was_live tells the two apart,
// for the releases metric: expires_at is cut to a moment after the
// statement began if the lease was live then, and is left before it if not.
//
// Waiters are woken at commit by a NOTIFY, but only if some Manager waits
// for the resource (see sqlRegisterWaiter): PostgreSQL serialises every
// notifying commit in the database, WAL flush included, so a NOTIFY nobody
// needs would stop unrelated releases from sharing a flush. The try-lock
// tells: it fails while a waiter's shared lock is held, and when it succeeds
// it is held until our commit, so a waiter registering meanwhile waits for
// the commit and then sees the release in its next try. Either way no
// release can slip between a waiter's registration and its sleep.
//
// A release commits without waiting for its WAL flush (synchronous_commit
// off for this transaction only; set_config(…, true) lasts until its end,
// and PostgreSQL reads the setting when it commits). That is safe: a release
// lost in a crash leaves the lease held until its TTL, exactly as if its
// holder had crashed, which leases are made for. Nothing else is weakened:
// the next grant's commit is flushed, and flushing WAL flushes everything
// before it, this release included, so no grant is ever acknowledged on top
// of a release a crash could undo. Grants and renewals stay synchronous: a
// lost grant or renewal would leave a holder believing in a lease the
// database does not have. A cycle then waits for one flush, not two.
const sqlRelease = sqlReleased + `,
       set_config('synchronous_commit', 'off', true) = 'off' AS lazy
FROM released`

// sqlReleased is what both releases share: the lease ended by its holder
// (lease id and owner), and a waiter of another Manager told (the advisory
// lock held means one registered: sqlRegisterWaiter).
const sqlReleased = `
WITH released AS (
    UPDATE leases
    SET expires_at = least(expires_at, clock_timestamp())
    WHERE resource = $1 AND lease_id = $2 AND owner IS NOT DISTINCT FROM $3
    RETURNING resource, token, expires_at >= statement_timestamp() AS was_live
)
SELECT token, was_live,
       CASE WHEN pg_try_advisory_xact_lock(` + waitLockClass + `, hashtext(resource)) THEN false
            ELSE (SELECT true FROM pg_notify('` + notifyChannel + `', resource || ' ' || token))
       END AS notified`

// A Manager with callers waiting for a resource holds this shared advisory
// lock on its LISTEN session while they wait, so that releases of the
// resource notify (sqlRelease). Session advisory locks write nothing; the
// wait for one is bounded by one release's commit. hashtext collisions only
// cost a NOTIFY that no one needed.
const (
	waitLockClass       = "1818979687" // 'lkmg': lockmgr's own class of two-key advisory locks
	sqlRegisterWaiter   = `SELECT pg_advisory_lock_shared(` + waitLockClass + `, hashtext($1))`
	sqlUnregisterWaiter = `SELECT pg_advisory_unlock_shared(` + waitLockClass + `, hashtext($1))`
)

const sqlGet = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE resource = $1`

const sqlListLive = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE expires_at > clock_timestamp()
ORDER BY resource
LIMIT $1`

// The live leases gauge (metrics.go), at each scrape: a sequential scan of
// one row per resource, no lock.
const sqlCountLive = `SELECT count(*) FROM leases WHERE expires_at > clock_timestamp()`

// The fence, run inside the writer's transaction before its write. FOR SHARE
// conflicts with the UPDATE of a takeover: until the writer commits, no newer
// grant can be made, so nothing can come between this check and the write.
const sqlFence = `
SELECT token, expires_at > clock_timestamp()
FROM leases WHERE resource = $1
FOR SHARE`

// The fence for a holder that keeps its lease across transactions
// (InTxFence), which also asks whether another Manager waits for the
// resource: the try-lock fails while a waiter's shared registration lock
// (sqlRegisterWaiter) is held. When it succeeds it is held until the
// caller's commit, so a waiter registering meanwhile waits for that commit
// and is seen by the holder's next fence — or finds the lease released.
const sqlFenceWanted = `
SELECT token, expires_at > clock_timestamp(), NOT pg_try_advisory_xact_lock(` + waitLockClass + `, hashtext(resource))
FROM leases WHERE resource = $1
FOR SHARE`

// Whether another Manager waits for a resource, asked right after a grant
// in the holder's transaction (InTxWanted): the same try-lock as
// sqlFenceWanted's, held until the caller's commit when it succeeds.
const sqlWanted = `SELECT NOT pg_try_advisory_xact_lock(` + waitLockClass + `, hashtext($1))`

// sqlRelease inside the caller's transaction (InTxRelease): the same,
// without making the transaction's commit asynchronous, since the caller's
// own writes commit with it.
const sqlReleaseInTx = sqlReleased + `
FROM released`

const sqlTokenIssuedFor = `SELECT EXISTS (SELECT 1 FROM lease_grants WHERE token = $1 AND resource = $2)`

// The pruners (prune.go): each is one short statement, committed alone,
// deleting at most $2 rows that outlived the retention ($1 ms) by the
// database's clock. Each locks only the rows it deletes, skipping rows
// another transaction has locked (a takeover in flight, a fenced writer,
// another node's pruner), so it never waits and is never waited for long.
// Rows are named by their key, not their ctid: a lease row is updated in
// place by every grant, renewal and release, and a ctid names one version.

// Deletes the rows of resources whose newest lease ran out more than the
// retention ago, except those of resources beginning with one of $3. The
// FOR UPDATE re-reads a row updated since the snapshot and re-checks it, so
// a lease granted meanwhile is never deleted; the outer condition says so
// again. A grant racing the delete either locked the row first (and it is
// skipped) or waits for this commit, finds no row, and inserts one with a
// token drawn after it: above every token the deleted row ever had, since
// the sequence is shared (lockmgr_try_acquire). No index on expires_at: a
// sequential scan of one row per resource, which keeps renewals and
// releases HOT updates; the rows it picked are then deleted through the
// primary key (= ANY of an array, where IN would join the whole table).
const sqlPruneLeases = `
DELETE FROM leases
WHERE resource = ANY (ARRAY(
    SELECT resource FROM leases
    WHERE expires_at < now() - $1 * interval '1 millisecond'
      AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS keep(prefix) WHERE starts_with(resource, keep.prefix))
    LIMIT $2
    FOR UPDATE SKIP LOCKED))
  AND expires_at < now() - $1 * interval '1 millisecond'`

// Deletes grants made more than the retention ago, except each resource's
// newest (the token in its lease row), oldest first through the granted_at
// index. The fence reads lease_grants only for a token below the newest, to
// tell a stale token from one never issued; without its grant a stale token
// is refused as never issued, and never accepted (that needs the newest
// token, read from leases). Kept newest grants older than the retention are
// passed over by every batch: one per resource at most.
const sqlPruneGrants = `
DELETE FROM lease_grants
WHERE token IN (
    SELECT g.token FROM lease_grants g
    WHERE g.granted_at < now() - $1 * interval '1 millisecond'
      AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.resource = g.resource AND l.token = g.token)
    ORDER BY g.granted_at
    LIMIT $2
    FOR UPDATE OF g SKIP LOCKED)`

// sqlTryAcquire for many resources at once (Options.CombineGrants): one
// statement, so one transaction and one WAL flush for all the grants. Each
// row of the arrays (resource, holder, lease id, ttl ms, owner) is one call of
// the same function, in order; the combiner never puts one resource in twice,
// since the second call would see the first's row. ran_out reads the
// statement's snapshot as in sqlTryAcquire.
const sqlTryAcquireMany = `
SELECT r.ord, a.granted, a.resource, a.holder, a.token, a.lease_id, a.acquired_at, a.expires_at, a.ttl_ms, a.db_now,
       coalesce((SELECT p.expires_at >= p.acquired_at + p.ttl_ms * interval '1 millisecond'
                 FROM leases p WHERE p.resource = r.resource), false) AS ran_out
FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::text[])
     WITH ORDINALITY AS r(resource, holder, lease_id, ttl_ms, owner, ord)
CROSS JOIN LATERAL lockmgr_try_acquire(r.resource, r.holder, r.lease_id, r.ttl_ms, r.owner) AS a
ORDER BY r.ord`

// sqlRelease for many leases at once (Options.CombineGrants), each named by
// resource, lease id and owner as there, in one transaction committed without
// waiting for its flush, for the same reason; each released resource
// notifies its waiters as there. The combiner never puts one resource in
// twice. Returns one row per lease released, with its resource.
const sqlReleaseMany = `
WITH released AS (
    UPDATE leases l
    SET expires_at = least(l.expires_at, clock_timestamp())
    FROM unnest($1::text[], $2::uuid[], $3::text[]) AS r(resource, lease_id, owner)
    WHERE l.resource = r.resource AND l.lease_id = r.lease_id AND l.owner IS NOT DISTINCT FROM r.owner
    RETURNING l.resource, l.token, l.expires_at >= statement_timestamp() AS was_live
)
SELECT resource, token, was_live,
       CASE WHEN pg_try_advisory_xact_lock(` + waitLockClass + `, hashtext(resource)) THEN false
            ELSE (SELECT true FROM pg_notify('` + notifyChannel + `', resource || ' ' || token))
       END AS notified,
       set_config('synchronous_commit', 'off', true) = 'off' AS lazy
FROM released`
