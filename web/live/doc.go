// Package live is bankd's live page: a static page (embedded, no build step,
// nothing fetched from elsewhere) that shows the accounts, the live leases
// and the nodes of the cluster, a timeline of what every node does,
// delivered with Server-Sent Events, and buttons that play the seed's
// scenarios with real requests to bankd.
//
// The timeline comes from PostgreSQL, not from this process: triggers
// (migration 00008) write a row to live_events in every transaction that
// opens an account, appends to the ledger or grants, renews or releases a
// lease, whichever node ran it, if its session asked to (WriteEvents: a
// node with the page off pays nothing); refusals, which commit nothing, are written
// by the node that refused (Live.Refused). Every node reads that table by id
// (hub.go), so a page on node-a shows what node-b did, and the ids, drawn
// from one sequence, mean the same on every node: a page that reconnects to
// any node resumes with Last-Event-ID, without duplicates. Nothing in
// lockbank reads the table to decide anything; a lost event costs a line on
// a page, never money.
//
// The paths through the package:
//
//	page.go      GET /, /live/{file}   the embedded page (static/)
//	snapshot.go  GET /live/snapshot    accounts, ledger tails, live leases, nodes, the database's now()
//	hub.go       one poller per node   reads live_events by id, in order, and fans out
//	stream.go    GET /live/events      one SSE stream per page: replay after Last-Event-ID, then live
//	refusal.go   Live.Refused          a refused change, written as an event by the node that refused it
//	events.go    WriteEvents           the session setting that turns the triggers on
package live
