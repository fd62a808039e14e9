// Package actors holds Warren's actors: each owns one piece of state and the resources that go with it, and releases them when it stops.
//
// The tree (docs/architecture.md):
//
//	engine ─┬─ signaling (NATS connection, subscriptions, embedded server)
//	        ├─ health hub (judges every tunnel's health, grouped by exit)
//	        ├─ directory (live exits from their signed announcements; from the first ask on)
//	        ├─ exit ── device ─┬─ peer (one per session or static peer) ── connection (one per flow)
//	        │                  └─ connect-service accept loop, probe echo loop
//	        └─ tunnel ─┬─ keepalive (judges the current leg's health; respawned if lost)
//	                   ├─ leg (one session with one exit) ── device ── peer (the exit; runs the handshake probe)
//	                   ├─ connection (one per proxied connection)
//	                   └─ proxy accept loops
//
// Every actor is spawned with a supervisor that stops, never restarts, a failed child: a restart
// would re-create resources the failed incarnation still holds. The parent decides what follows
// when a child it relies on stops unexpectedly (docs/architecture.md).
package actors
