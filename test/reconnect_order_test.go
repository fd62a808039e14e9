package test

import (
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// TestReconnectAfterFailedSwitchSkipsTheLostExit: the tunnel's exit a says goodbye while a switch
// to b is under way, and the switch then fails: the reconnect that follows starts after a in the
// failover list (a said goodbye), not at the configured exit a again.
func TestReconnectAfterFailedSwitchSkipsTheLostExit(t *testing.T) {
	w := newWorld(t)
	a := w.exit("a", nil)
	b, relayB := w.relayed("b")
	w.exit("c", nil)
	s := spec("a", 3*time.Second, calmHealth())
	s.Exits = []string{"c"}
	tun := w.open(s)
	relayB.Blackhole() // the new leg can only fail, at its setup deadline
	switched := async(func() error { return tun.Switch(bounded(t), "b") })
	w.rec.await(t, stSw)
	awaitSessionOpened(t, b)
	closeEngine(t, a)
	awaitCurrentLost(t, tun)
	wantErr(t, "Switch whose old exit said goodbye and whose new leg failed", result(t, switched, "Switch"), engine.ErrHandshakeTimeout)
	w.rec.await(t, stRcn)
	up := w.rec.await(t, stUp)
	if !strings.Contains(up.Cause, "reconnected to c after 1 attempt(s)") {
		t.Fatalf("reconnected: %q; want c at the first attempt", up.Cause)
	}
	wantInfo(t, tun, stUp, "c", 1)
}
