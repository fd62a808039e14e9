package test

// The scenarios of TestTransitions' rows (transitions_test.go). Each drives real faults — a relay
// that blackholes the data plane, a NATS server stopped and restarted, exits that shut down (and say
// goodbye), an exit that never answers — and returns the row's recorded tunnel. Every outage is a
// state the relay or server holds until the scenario ends it; every wait is for an event or an
// answer, bounded.

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// rowRun is what a scenario leaves: the recorder, and the tunnel for the runner to close (nil if
// it never came up).
type rowRun struct {
	rec *recorder
	tun *engine.Tunnel
}

// calmHealth: pings often (signaling noticed back quickly), but only a 2 s silence counts as a
// failed ping, so nothing on a loaded machine makes a healthy tunnel Degraded; quick retries.
func calmHealth() engine.HealthConfig {
	return engine.HealthConfig{SignalingInterval: engine.Duration(250 * time.Millisecond),
		BackoffMin: engine.Duration(100 * time.Millisecond), BackoffMax: engine.Duration(500 * time.Millisecond)}
}

// quickDataPlane: calmHealth with a dead data plane found in about a second.
func quickDataPlane() engine.HealthConfig {
	h := calmHealth()
	h.Interval, h.ProbeTimeout = engine.Duration(300*time.Millisecond), engine.Duration(250*time.Millisecond)
	return h
}

func spec(exit string, handshake time.Duration, h engine.HealthConfig) engine.TunnelSpec {
	return engine.TunnelSpec{Exit: exit, HandshakeTimeout: engine.Duration(handshake), Health: h}
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v; want %v", what, err, want)
	}
	t.Logf("%s: %v", what, err)
}

func wantNil(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantInfo(t testing.TB, tun *engine.Tunnel, state messages.TunnelState, exit string, reconnects int) {
	t.Helper()
	info, err := tun.Info(bounded(t))
	if err != nil || info.State != state || info.ExitID != exit || info.Reconnects != reconnects {
		t.Fatalf("Info: %s on %q after %d reconnects (%v); want %s on %q after %d", info.State, info.ExitID, info.Reconnects, err, state, exit, reconnects)
	}
}

// upTunnel: one exit "x" on the world's NATS and the tunnel Up on it.
func upTunnel(t *testing.T) (*world, *engine.Engine, *engine.Tunnel) {
	w := newWorld(t)
	x := w.exit("x", nil)
	return w, x, w.open(spec("x", 10*time.Second, calmHealth()))
}

func rowCloseIdle(t *testing.T) rowRun {
	w, _, tun := upTunnel(t)
	return rowRun{w.rec, tun} // the runner's Close drains nothing
}

// withConn: the tunnel Up on "x" with one proxied connection to an echo server, proven.
func withConn(t *testing.T) (*world, *engine.Tunnel, net.Conn) {
	echo := startServer(t, echoHandler)
	w, _, tun := upTunnel(t)
	c := mustSocks(t, tun.SOCKSAddr(), echo.Addr())
	t.Cleanup(func() { c.Close() })
	wantNil(t, "round trip", roundTrip(c, "before close"))
	return w, tun, c
}

func rowCloseActive(t *testing.T) rowRun {
	w, tun, c := withConn(t)
	closed := async(func() error { return tun.Close(bounded(t), engine.WithDrainTimeout(time.Minute)) })
	w.rec.await(t, stDrn)
	wantNil(t, "round trip while draining", roundTrip(c, "during the drain"))
	c.Close() // the last connection ends: Closing
	wantNil(t, "Close", result(t, closed, "Close"))
	return rowRun{w.rec, tun}
}

func rowDrainRunsOut(t *testing.T) rowRun {
	w, tun, c := withConn(t)
	closed := async(func() error { return tun.Close(bounded(t), engine.WithDrainTimeout(200*time.Millisecond)) })
	w.rec.await(t, stDrn)
	if err, n, _ := readUntilEnd(c, within); err != io.EOF || n != 0 {
		t.Fatalf("connection at the end of the drain: %d bytes, then %v; want EOF", n, err)
	}
	c.Close()
	wantNil(t, "Close", result(t, closed, "Close"))
	return rowRun{w.rec, tun}
}

func rowSecondClose(t *testing.T) rowRun {
	w, tun, c := withConn(t)
	first := async(func() error { return tun.Close(bounded(t), engine.WithDrainTimeout(time.Minute)) })
	w.rec.await(t, stDrn)
	second := async(func() error { return tun.Close(bounded(t)) })
	wantNil(t, "round trip between the Closes", roundTrip(c, "still draining"))
	c.Close()
	wantNil(t, "first Close", result(t, first, "first Close"))
	wantNil(t, "second Close", result(t, second, "second Close"))
	wantNil(t, "Close of a closed tunnel", tun.Close(bounded(t)))
	return rowRun{w.rec, tun}
}

func rowUnknownExit(t *testing.T) rowRun {
	w := newWorld(t)
	wantErr(t, "OpenTunnel to an exit nobody serves", w.openErr(bounded(t), spec("nowhere", 10*time.Second, calmHealth())), engine.ErrExitUnreachable)
	return rowRun{w.rec, nil}
}

func rowRefused(t *testing.T) rowRun {
	w := newWorld(t)
	other, _ := newIdentitySeed(t)
	w.exit("x", func(c *engine.Config) { c.Exit.AllowedClients = []string{other.ID()} })
	wantErr(t, "OpenTunnel to an exit that admits another client", w.openErr(bounded(t), spec("x", 10*time.Second, calmHealth())), engine.ErrSessionRefused)
	return rowRun{w.rec, nil}
}

func rowPortInUse(t *testing.T) rowRun {
	w := newWorld(t)
	w.exit("x", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := spec("x", 10*time.Second, calmHealth())
	s.SOCKS = ln.Addr().String()
	if err := w.openErr(bounded(t), s); !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("OpenTunnel on a proxy address in use: %v; want an error naming %s", err, ln.Addr())
	}
	return rowRun{w.rec, nil}
}

func rowCloseNegotiating(t *testing.T) rowRun {
	w := newWorld(t)
	asked := silentExit(t, w.ns, "mute")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := async(func() error { return w.openErr(ctx, spec("mute", within, calmHealth())) })
	heard(t, asked, "the silent exit's session request")
	cancel() // OpenTunnel's context ends: it closes the tunnel
	wantErr(t, "OpenTunnel cancelled while negotiating", result(t, opened, "OpenTunnel"), context.Canceled)
	return rowRun{w.rec, nil}
}

func rowNotUp(t *testing.T) rowRun {
	ns := startNATS(t, nil)
	asked := silentExit(t, ns, "mute")
	bt := newBareTunnel(t, ns, "mute")
	heard(t, asked, "the silent exit's session request")
	sw := bt.ask(t, &messages.SwitchTunnel{ExitID: "other"}).(*messages.SwitchTunnelResponse)
	wantErr(t, "Switch while negotiating", sw.Err, engine.ErrNotUp)
	rc := bt.ask(t, &messages.ReconfigureTunnel{}).(*messages.ReconfigureTunnelResponse)
	wantErr(t, "Reconfigure while negotiating", rc.Err, engine.ErrNotUp)
	bt.ask(t, &messages.CloseTunnel{Reason: "closed before up"})
	res, err := bt.opened.Result()
	if err != nil {
		t.Fatalf("the opener heard nothing: %v", err)
	}
	wantErr(t, "the opener of a tunnel closed before Up", res.(*messages.OpenTunnelResponse).Err, engine.ErrTunnelClosed)
	return rowRun{bt.rec, nil}
}

func rowHandshakeTimeout(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	relay.Blackhole() // the session is granted over NATS; no WireGuard packet gets through
	wantErr(t, "OpenTunnel through a blackhole", w.openErr(bounded(t), spec("x", time.Second, calmHealth())), engine.ErrHandshakeTimeout)
	return rowRun{w.rec, nil}
}

func rowCloseHandshaking(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	relay.Blackhole()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := async(func() error { return w.openErr(ctx, spec("x", within, calmHealth())) })
	w.rec.await(t, stHs)
	cancel()
	wantErr(t, "OpenTunnel cancelled while handshaking", result(t, opened, "OpenTunnel"), context.Canceled)
	return rowRun{w.rec, nil}
}

// twoUp: exits "a" (plain) and "b" on the world's NATS, b through a relay; the tunnel Up on a.
func twoUp(t *testing.T, handshake time.Duration) (w *world, a, b *engine.Engine, relayB *Relay, tun *engine.Tunnel) {
	w = newWorld(t)
	a = w.exit("a", nil)
	b, relayB = w.relayed("b")
	return w, a, b, relayB, w.open(spec("a", handshake, calmHealth()))
}

func rowSwitch(t *testing.T) rowRun {
	w, _, _, _, tun := twoUp(t, 10*time.Second)
	wantNil(t, "Switch to b", tun.Switch(bounded(t), "b"))
	wantInfo(t, tun, stUp, "b", 0)
	return rowRun{w.rec, tun}
}

func rowSwitchFails(t *testing.T) rowRun {
	w, _, tun := upTunnel(t)
	wantErr(t, "Switch to an exit nobody serves", tun.Switch(bounded(t), "nowhere"), engine.ErrExitUnreachable)
	wantInfo(t, tun, stUp, "x", 0)
	return rowRun{w.rec, tun}
}

// switching: the tunnel on a is Switching to b, whose WireGuard handshake is blackholed, and b has
// granted the session; the Switch call's error arrives on the channel.
func switching(t *testing.T, handshake time.Duration) (w *world, a, b *engine.Engine, relayB *Relay, tun *engine.Tunnel, switched <-chan error) {
	w, a, b, relayB, tun = twoUp(t, handshake)
	relayB.Blackhole()
	switched = async(func() error { return tun.Switch(bounded(t), "b") })
	w.rec.await(t, stSw)
	awaitSessionOpened(t, b)
	return
}

// rowNewLost: the new exit is lost mid-switch (it said goodbye while its leg was coming up); the
// tunnel stays Up on the old exit, at once rather than at the setup deadline.
func rowNewLost(t *testing.T) rowRun {
	w, _, b, _, tun, switched := switching(t, within)
	closeEngine(t, b)
	wantErr(t, "Switch whose new exit said goodbye", result(t, switched, "Switch"), engine.ErrExitGone)
	wantInfo(t, tun, stUp, "a", 0)
	return rowRun{w.rec, tun}
}

func rowCloseSwitching(t *testing.T) rowRun {
	w, _, _, _, tun, switched := switching(t, within)
	wantErr(t, "a second Switch while switching", tun.Switch(bounded(t), "a"), engine.ErrBusy)
	wantErr(t, "Reconfigure while switching", tun.Reconfigure(bounded(t)), engine.ErrBusy)
	wantNil(t, "Close while switching", tun.Close(bounded(t)))
	wantErr(t, "the Switch closed under it", result(t, switched, "Switch"), engine.ErrTunnelClosed)
	return rowRun{w.rec, tun}
}

func rowOldLostNewUp(t *testing.T) rowRun {
	w, a, _, relayB, tun, switched := switching(t, within)
	closeEngine(t, a) // a says goodbye: the old leg is lost under the switch
	awaitCurrentLost(t, tun)
	relayB.Restore() // b's handshake completes (WireGuard retries it within ~5 s)
	wantNil(t, "Switch whose old exit was lost", result(t, switched, "Switch"))
	wantInfo(t, tun, stUp, "b", 0)
	return rowRun{w.rec, tun}
}

func rowBothLost(t *testing.T) rowRun {
	// b's handshake stays blackholed: the new leg fails at its setup deadline, after a is lost.
	w, a, _, _, tun, switched := switching(t, 3*time.Second)
	closeEngine(t, a)
	awaitCurrentLost(t, tun)
	wantErr(t, "Switch whose old exit was lost and whose new leg failed", result(t, switched, "Switch"), engine.ErrHandshakeTimeout)
	w.rec.await(t, stRcn) // no exit left to try: it stays Reconnecting until closed
	return rowRun{w.rec, tun}
}

func rowCloseAfterOldLost(t *testing.T) rowRun {
	w, a, _, _, tun, switched := switching(t, within)
	closeEngine(t, a)
	awaitCurrentLost(t, tun)
	wantNil(t, "Close while switching with no leg serving", tun.Close(bounded(t)))
	wantErr(t, "the Switch closed under it", result(t, switched, "Switch"), engine.ErrTunnelClosed)
	return rowRun{w.rec, tun}
}

func rowReconfigure(t *testing.T) rowRun {
	w, _, tun := upTunnel(t)
	wantNil(t, "Reconfigure", tun.Reconfigure(bounded(t)))
	wantInfo(t, tun, stUp, "x", 0)
	return rowRun{w.rec, tun}
}

func rowCloseReconfiguring(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	tun := w.open(spec("x", within, calmHealth()))
	relay.Blackhole() // the new leg's handshake cannot complete
	reconf := async(func() error { return tun.Reconfigure(bounded(t)) })
	w.rec.await(t, stRcf)
	wantErr(t, "a second Reconfigure while reconfiguring", tun.Reconfigure(bounded(t)), engine.ErrBusy)
	wantNil(t, "Close while reconfiguring", tun.Close(bounded(t)))
	wantErr(t, "the Reconfigure closed under it", result(t, reconf, "Reconfigure"), engine.ErrTunnelClosed)
	return rowRun{w.rec, tun}
}

func rowChangeWhileDraining(t *testing.T) rowRun {
	w, tun, c := withConn(t)
	closed := async(func() error { return tun.Close(bounded(t), engine.WithDrainTimeout(time.Minute)) })
	w.rec.await(t, stDrn)
	wantErr(t, "Reconfigure while draining", tun.Reconfigure(bounded(t)), engine.ErrTunnelClosed)
	wantErr(t, "Switch while draining", tun.Switch(bounded(t), "x"), engine.ErrTunnelClosed)
	c.Close()
	wantNil(t, "Close", result(t, closed, "Close"))
	return rowRun{w.rec, tun}
}

// reconnecting: the tunnel's only exit said goodbye (shut down): the tunnel is Reconnecting, and
// stays so (nobody serves "x" any more).
func reconnecting(t *testing.T) (*world, *engine.Tunnel) {
	w, x, tun := upTunnel(t)
	closeEngine(t, x)
	if ev := w.rec.await(t, stRcn); !strings.Contains(ev.Cause, "exit ended the session") {
		t.Fatalf("reconnecting for %q, want the exit's goodbye", ev.Cause)
	}
	return w, tun
}

func rowCloseReconnecting(t *testing.T) rowRun {
	w, tun := reconnecting(t)
	wantNil(t, "Close while reconnecting", tun.Close(bounded(t)))
	return rowRun{w.rec, tun}
}

func rowBusyReconnecting(t *testing.T) rowRun {
	w, tun := reconnecting(t)
	wantErr(t, "Switch while reconnecting", tun.Switch(bounded(t), "x"), engine.ErrBusy)
	wantErr(t, "Reconfigure while reconnecting", tun.Reconfigure(bounded(t)), engine.ErrBusy)
	return rowRun{w.rec, tun}
}

func rowBlackhole(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	tun := w.open(spec("x", 3*time.Second, quickDataPlane()))
	relay.Blackhole()
	w.rec.await(t, stRcn)
	relay.Restore()
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 1)
	return rowRun{w.rec, tun}
}

func rowGoodbyeFailover(t *testing.T) rowRun {
	x := newTwoExits(t, "tr")
	rec := record(x.ev, x.tun.ID())
	closeEngine(t, x.eng[0])
	rec.await(t, stRcn)
	rec.await(t, stUp)
	wantInfo(t, x.tun, stUp, x.ids[1], 1)
	return rowRun{rec, x.tun}
}

// degraded: the tunnel Up on "x", then its NATS server stopped: Degraded. The server stays down
// until the scenario restarts it.
func degraded(t *testing.T, handshake time.Duration, h engine.HealthConfig) (*world, *Relay, *engine.Tunnel) {
	w := newWorld(t)
	_, relay := w.relayed("x")
	tun := w.open(spec("x", handshake, h))
	w.ns.Stop()
	w.rec.await(t, stDeg)
	return w, relay, tun
}

func rowNATSOutage(t *testing.T) rowRun {
	w, _, tun := degraded(t, 10*time.Second, calmHealth())
	w.ns.Restart()
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 0)
	return rowRun{w.rec, tun}
}

func rowCloseDegraded(t *testing.T) rowRun {
	w, _, tun := degraded(t, 10*time.Second, calmHealth())
	wantNil(t, "Close while degraded", tun.Close(bounded(t)))
	w.ns.Restart()
	return rowRun{w.rec, tun}
}

func rowDegradedSwitch(t *testing.T) rowRun {
	w, _, tun := degraded(t, 3*time.Second, calmHealth())
	if err := tun.Switch(bounded(t), "other"); err == nil {
		t.Fatal("Switch with NATS down succeeded")
	} else {
		t.Logf("Switch with NATS down: %v", err)
	}
	w.rec.await(t, stSw)
	w.rec.await(t, stUp)  // the switch failed: it stays on x ...
	w.rec.await(t, stDeg) // ... and signaling still fails
	w.ns.Restart()
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 0)
	return rowRun{w.rec, tun}
}

func rowDegradedReconfigure(t *testing.T) rowRun {
	w, _, tun := degraded(t, 3*time.Second, calmHealth())
	if err := tun.Reconfigure(bounded(t)); err == nil {
		t.Fatal("Reconfigure with NATS down succeeded")
	} else {
		t.Logf("Reconfigure with NATS down: %v", err)
	}
	w.rec.await(t, stFail)
	w.ns.Restart()
	return rowRun{w.rec, tun}
}

func rowDegradedDataPlane(t *testing.T) rowRun {
	w, relay, tun := degraded(t, 3*time.Second, quickDataPlane())
	relay.Blackhole()
	w.rec.await(t, stRcn)
	w.ns.Restart() // the relay stays blackholed: no attempt can come up
	return rowRun{w.rec, tun}
}

// TestTransitionsExitGoodbyeDuringSetup: an exit that shuts down right after granting a session
// says goodbye for it, and that goodbye can reach the client before the grant has reached the leg.
// It must end the new leg at once (ErrExitGone), not at its setup deadline: signaling watches a
// session from its request on and holds a goodbye that overtakes the grant until the grant names
// the exit that may sign it. Each round switches to an exit that closes as soon as it has granted
// the session (before this was mended, most rounds waited for the deadline).
func TestTransitionsExitGoodbyeDuringSetup(t *testing.T) {
	dropped := 0
	for round := 1; round <= 20; round++ {
		t.Run("round", func(t *testing.T) {
			_, _, b, relayB, tun := twoUp(t, 3*time.Second)
			relayB.Blackhole() // b's leg can only end by b's goodbye or by its setup deadline
			switched := async(func() error { return tun.Switch(bounded(t), "b") })
			awaitSessionOpened(t, b)
			closeEngine(t, b)
			if err := result(t, switched, "Switch"); !errors.Is(err, engine.ErrExitGone) {
				dropped++
				t.Errorf("round %d: the exit's goodbye did not end the new leg; the switch failed with %v", round, err)
			}
		})
	}
	t.Logf("%d of 20 goodbyes sent right after the grant were dropped", dropped)
}

// rowStartLate: StartTunnel to an exit nobody serves yet; once it starts, the tunnel comes Up by itself.
func rowStartLate(t *testing.T) rowRun {
	w := newWorld(t)
	tun := w.start(spec("x", 2*time.Second, calmHealth()))
	w.rec.await(t, stRcn)
	w.exit("x", nil)
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 0) // its first time Up is not a reconnection
	return rowRun{w.rec, tun}
}

// rowStartBlackholed: StartTunnel to an exit whose data plane is blackholed: the session is
// granted, the first handshake times out, and the tunnel reconnects until the path heals.
func rowStartBlackholed(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	relay.Blackhole()
	tun := w.start(spec("x", time.Second, calmHealth()))
	w.rec.await(t, stRcn)
	relay.Restore()
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 0) // its first time Up is not a reconnection
	return rowRun{w.rec, tun}
}

// rowStartReconfigureFails: a StartTunnel tunnel Up, then a Reconfigure whose new session cannot
// complete its handshake (blackholed): the tunnel keeps trying (Reconnecting) instead of failing,
// and is Up again once the path heals.
func rowStartReconfigureFails(t *testing.T) rowRun {
	w := newWorld(t)
	_, relay := w.relayed("x")
	tun := w.start(spec("x", time.Second, calmHealth()))
	w.rec.await(t, stUp)
	relay.Blackhole()
	wantErr(t, "Reconfigure through a blackhole", tun.Reconfigure(bounded(t)), engine.ErrHandshakeTimeout)
	w.rec.await(t, stRcn)
	relay.Restore()
	w.rec.await(t, stUp)
	wantInfo(t, tun, stUp, "x", 1)
	return rowRun{w.rec, tun}
}
