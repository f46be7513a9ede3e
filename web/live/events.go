package live

import "github.com/jackc/pgx/v5"

// EventsSetting is the session setting that makes migration 00008's
// triggers write this session's commits to live_events. Sessions without it
// write nothing, and their triggers cost next to nothing: the events cost
// bankd about 15% of its throughput (BENCHMARKS.md), which a node whose page
// is off should not pay.
const EventsSetting = "lockbank.live_events"

// WriteEvents makes the sessions of c write live events (EventsSetting, sent
// when each connection starts, so that it holds for every transaction of the
// session). Not behind a pooler in transaction mode: PgBouncer refuses
// settings it does not know in the startup packet, and a transaction would
// run on a session that never asked.
func WriteEvents(c *pgx.ConnConfig) {
	c.RuntimeParams[EventsSetting] = "on"
}
