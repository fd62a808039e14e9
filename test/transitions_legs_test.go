package test

// The leg's transitions (actors/leg.go), checked against docs/state-machines.md's "### Leg
// transitions" table: every leg of every TestTransitions row logs each transition it takes ("leg
// state", from, to, at debug) to legSteps; once all rows have run, every documented transition
// must have been taken and every one taken must be documented. Two rows exist for the leg alone:
// a switched-away leg that drains until its last connection ends, and one whose exit is lost while
// it drains.

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// legStep is one transition of a leg, as its log line names the states.
type legStep struct{ from, to string }

// legSteps keeps every leg's "leg state" log line (from, to) of every TestTransitions row.
var legSteps = newLogCapture("leg state")

// checkLegSteps compares the leg transitions taken with the documented ones.
func checkLegSteps(t *testing.T) {
	t.Helper()
	doc := docLegTransitions(t)
	seen := map[legStep]int{}
	for _, r := range legSteps.ended(func(r logRecord) bool { return r.str("msg") == "leg state" }) {
		seen[legStep{r.str("from"), r.str("to")}]++
	}
	for s, n := range seen {
		if _, ok := doc[s]; !ok {
			t.Errorf("a leg went %s→%s (%d times), which docs/state-machines.md does not list", s.from, s.to, n)
		}
	}
	var taken []string
	for s, on := range doc {
		if seen[s] == 0 {
			t.Errorf("docs/state-machines.md lists the leg transition %s→%s (on %s), which no row took", s.from, s.to, on)
		}
		taken = append(taken, s.from+"→"+s.to)
	}
	if !t.Failed() {
		slices.Sort(taken)
		t.Logf("%d documented leg transitions, all taken: %v", len(doc), taken)
	}
}

// docLegTransitions reads the "### Leg transitions" table (| from | to | on |).
func docLegTransitions(t testing.TB) map[legStep]string {
	t.Helper()
	out := map[legStep]string{}
	for _, r := range docTable(t, "### Leg transitions") {
		out[legStep{r.from, r.to}] = r.on
	}
	return out
}

// switchedWithConn: the tunnel switched from a (reached through relayA) to b while a connection
// through a stays open on the old leg, which drains; the round trip proves the old leg still
// carries it.
func switchedWithConn(t *testing.T) (w *world, a *engine.Engine, relayA *Relay, tun *engine.Tunnel, c net.Conn) {
	echo := startServer(t, echoHandler)
	w = newWorld(t)
	a, relayA = w.relayed("a")
	w.exit("b", nil)
	tun = w.open(spec("a", 10*time.Second, calmHealth()))
	c = mustSocks(t, tun.SOCKSAddr(), echo.Addr())
	t.Cleanup(func() { c.Close() })
	wantNil(t, "round trip before the switch", roundTrip(c, "on a"))
	wantNil(t, "Switch to b", tun.Switch(bounded(t), "b", engine.WithDrainTimeout(time.Minute)))
	wantInfo(t, tun, stUp, "b", 0)
	wantNil(t, "round trip on the draining leg", roundTrip(c, "still on a"))
	return w, a, relayA, tun, c
}

// rowLegDrains: the old leg drains until its last connection ends, then is closed (its exit hears
// the goodbye).
func rowLegDrains(t *testing.T) rowRun {
	w, a, _, tun, c := switchedWithConn(t)
	c.Close()
	awaitSessionClosed(t, a)
	return rowRun{w.rec, tun}
}

// rowLegLostDraining: the old leg's exit goes away while the leg drains. Its data plane is
// blackholed first, so that only the exit's goodbye can tell the leg (the exit's resets of its
// flows would otherwise end the connection, and the leg with it, first): the leg fails and the
// tunnel ends its connection.
func rowLegLostDraining(t *testing.T) rowRun {
	w, a, relayA, tun, c := switchedWithConn(t)
	relayA.Blackhole()
	closeEngine(t, a)
	if err, _, _ := readUntilEnd(c, within); isTimeoutErr(err) {
		t.Fatalf("the connection on the lost draining leg did not end: %v", err)
	}
	return rowRun{w.rec, tun}
}
