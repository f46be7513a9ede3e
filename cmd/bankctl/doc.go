// Command bankctl plays lockbank's stories against bankd nodes and tells
// what happened, as a timeline and a verdict. It is wiring: the engines it
// drives are packages with tests of their own.
//
//	command  what it shows                                                     engine
//	race     concurrent withdrawals of a whole balance, per strategy:          client
//	         unsafe double-spends, row and lease are safe
//	pause    a lease holder frozen (SIGSTOP) past its lease, then resumed:     client, internal/cluster
//	         its late write is refused by the fence (--strategy lease-nofence:
//	         it overwrites; --strategy row: the row-lock TTL ends a frozen row
//	         lock; --client: the same story through the lock API)
//	crash    a lease holder killed (SIGKILL); the other node waits out the TTL client, internal/cluster
//	check    random operations from many clients under faults (pause inside  internal/history
//	         a lease, kill, terminate, db-restart), then a history check
//	bench    bankd under load, hot and spread, beside a raw-SQL baseline       internal/loadgen
//
// With no --targets it starts its own cluster (internal/cluster: a private
// PostgreSQL and bankd processes in demo mode — node-a and node-b; three
// nodes for check, one for bench) and stops it at the end. With --targets it
// plays against nodes others run, the first being node-a; --docker names
// node-a's container, frozen with docker pause and killed with docker kill.
// --json prints JSON Lines (events, then the result) instead of text.
// `bankctl help` lists every command's flags; exit codes: 0 the scenario
// showed what it promises, 1 a safe strategy was not safe or a demo did not
// show its point, 2 bad command line, 3 the cluster could not be started or
// reached.
package main
