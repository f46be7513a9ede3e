package lockmgr

// Every statement of the package, with the lock it takes and why. Time is
// always the database's: now() for grants (the statement's start, so a grant
// that waited gets a shorter lease, never a longer one), clock_timestamp() to
// judge whether a lease is live at the instant a write is fenced.

const leaseColumns = `resource, holder, token, lease_id, acquired_at, expires_at, ttl_ms`

// Grants a lease in one round trip (function lockmgr_try_acquire, migration
// 00003): takes over a lease that has run out or been released, makes the
// first grant of a new resource, or reports the holder. Taking over locks
// the row, so two takeovers serialize and the loser reports the winner; the
// token is drawn after any wait for that lock, so it is above every token
// granted before. Reporting a holder only reads: no transaction id, no
// token, no WAL flush, however often waiters ask.
const sqlTryAcquire = `
SELECT granted, ` + leaseColumns + `, db_now
FROM lockmgr_try_acquire($1, $2, $3, $4)`

// Who holds a resource, and the database's clock to measure the wait by.
const sqlHolder = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE resource = $1`

// Renews only the caller's own grant, and only while it is live: a lease that
// ran out may already belong to someone else in spirit, even if no one took
// it yet. The token is kept.
const sqlRenew = `
UPDATE leases
SET expires_at = clock_timestamp() + $3 * interval '1 millisecond', ttl_ms = $3
WHERE resource = $1 AND lease_id = $2 AND expires_at > clock_timestamp()
RETURNING ` + leaseColumns

// Releases the caller's own grant (expires it now, keeping the row as the
// record of the newest grant) and wakes waiters at commit. Releasing a lease
// that already ran out or was released matches too: releasing twice is
// harmless. A newer grant has another lease_id, so it is never touched.
const sqlRelease = `
WITH released AS (
    UPDATE leases
    SET expires_at = least(expires_at, clock_timestamp())
    WHERE resource = $1 AND lease_id = $2
    RETURNING resource
)
SELECT pg_notify('` + notifyChannel + `', resource) FROM released`

const sqlGet = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE resource = $1`

const sqlListLive = `
SELECT ` + leaseColumns + `, clock_timestamp()
FROM leases WHERE expires_at > clock_timestamp()
ORDER BY resource
LIMIT $1`

// The fence, run inside the writer's transaction before its write. FOR SHARE
// conflicts with the UPDATE of a takeover: until the writer commits, no newer
// grant can be made, so nothing can come between this check and the write.
const sqlFence = `
SELECT token, expires_at > clock_timestamp()
FROM leases WHERE resource = $1
FOR SHARE`

const sqlTokenIssuedFor = `SELECT EXISTS (SELECT 1 FROM lease_grants WHERE token = $1 AND resource = $2)`
