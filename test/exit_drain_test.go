package test

// An exit that drains (Engine.DrainExit): it announces draining, refuses new sessions with the
// final code draining, tells its clients, whose tunnels move to their next exit make-before-break
// while the flows already running through it finish; then it stops and announces that it leaves.
// A tunnel with nowhere else to go stays until the drain timeout ends it. A forged drain notice
// moves nothing.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/signaling"
)

// drainingExit starts exit id on ns with its own identity and the given drain timeout.
func drainingExit(t testing.TB, ns *natsServer, id string, drain time.Duration) *engine.Engine {
	t.Helper()
	_, seed := newIdentitySeed(t)
	return startExitEngine(t, id, func(c *engine.Config) {
		c.NATS.URLs, c.Identity = []string{ns.URL()}, seed
		c.Exit.DrainTimeout = engine.Duration(drain)
	})
}

// drainAsync drains e's exit in a goroutine; the channel hears DrainExit's result.
func drainAsync(e *engine.Engine) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- e.DrainExit(ctx)
	}()
	return done
}

// noFlows waits until e's exit counts no forwarded flow open: closed now, it ends at once (its
// clients hear a goodbye and reconnect) rather than draining (they would switch).
func noFlows(t testing.TB, e *engine.Engine) {
	t.Helper()
	testutil.Poll(t, 10*time.Second, "no flow left on the exit", e.ExitStatus, func(s engine.ExitStatus) bool { return s.Flows == 0 })
}

func exitOpened(t testing.TB, e *engine.Engine) uint64 {
	t.Helper()
	st, err := e.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Exit.Opened
}

// TestExitDrainMovesTunnel: tunnel T on exit A (failover B) carries an 8 MiB download through A
// when A drains. A announces draining; T moves to B make-before-break (Switching → Up on B, no
// reconnect) while the download goes on through A and arrives intact; new proxy connections go
// to B; a new session asked of A is refused as draining; A's flow ends normally, and A, drained,
// stops long before its drain timeout and announces that it leaves.
func TestExitDrainMovesTunnel(t *testing.T) {
	srv, started := slowServer(t)
	ns := startNATS(t, nil)
	heardCh := listenAnnouncements(t, ns.URL())
	exitA := drainingExit(t, ns, "dr-a", 30*time.Second)
	exitB := drainingExit(t, ns, "dr-b", 30*time.Second)
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "dr-a", Exits: []string{"dr-b"}, Health: fastHealth(),
		DrainTimeout: engine.Duration(30 * time.Second)})
	ev.id = tun.ID()
	hc := socksClient(t, tun)

	const size = 8 << 20
	dl := make(chan error, 1)
	go func() { dl <- slowDownload(hc, srv.URL, 131, size, 3000) }()
	awaitStarted(t, started)
	drainStart := time.Now()
	drained := drainAsync(exitA)

	awaitAnnouncement(t, heardCh, 5*time.Second, "dr-a", "draining", func(a *messages.ExitAnnouncement) bool {
		return a.State == messages.ExitDraining && a.Load.Flows >= 1
	})
	sw := ev.await(t, 5*time.Second, messages.StateSwitching, append(gone, messages.StateReconnecting)...)
	up := ev.await(t, 10*time.Second, messages.StateUp, append(gone, messages.StateReconnecting)...)
	t.Logf("drain → switching %v (%s); → up %v (%s)", ms(since(drainStart, sw)), sw.Cause, ms(since(drainStart, up)), up.Cause)
	if !strings.Contains(sw.Cause, "dr-a drains") {
		t.Errorf("switching for %q, want the drain of dr-a", sw.Cause)
	}
	info, err := tun.Info(context.Background())
	if err != nil || info.ExitID != "dr-b" || info.State != messages.StateUp || info.Reconnects != 0 {
		t.Fatalf("after the move: %+v, %v; want Up on dr-b with no reconnect", info, err)
	}

	// A new session on the draining exit is refused, finally.
	select {
	case err := <-dl:
		t.Fatalf("the download ended (%v) before the checks of the drain could run: make it longer", err)
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	openedAt := time.Now()
	if _, err := client.OpenTunnel(ctx, engine.TunnelSpec{Exit: "dr-a", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1"}); !errors.Is(err, engine.ErrExitDraining) {
		t.Errorf("OpenTunnel on the draining exit: %v, want ErrExitDraining", err)
	} else if d := time.Since(openedAt); d > 2*time.Second {
		t.Errorf("the draining refusal took %v: retried like unavailable?", d)
	}

	// New proxy connections go to B; the download still runs through A.
	aOpened, bOpened := exitOpened(t, exitA), exitOpened(t, exitB)
	if err := slowDownload(hc, srv.URL, 132, 64<<10, 10); err != nil {
		t.Fatalf("a new download after the move: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "dr-b to forward the new connection", func() bool { return exitOpened(t, exitB) > bOpened })
	if n := exitOpened(t, exitA); n != aOpened {
		t.Errorf("dr-a forwarded %d new connection(s) while draining", n-aOpened)
	}

	if err := testutil.Await(t, dl, time.Minute, "the download through the draining exit"); err != nil {
		t.Fatalf("download through the draining exit: %v", err)
	}
	if err := testutil.Await(t, drained, 20*time.Second, "DrainExit to return"); err != nil {
		t.Fatalf("DrainExit: %v", err)
	}
	took := time.Since(drainStart)
	awaitAnnouncement(t, heardCh, 5*time.Second, "dr-a", "leaving", func(a *messages.ExitAnnouncement) bool { return a.State == messages.ExitLeaving })
	if took > 15*time.Second {
		t.Errorf("dr-a drained in %v: it should end once its last flow ended, not at its drain timeout (30 s)", took)
	}
	st, err := exitA.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []messages.Side{messages.SideIncoming, messages.SideOutgoing} {
		if n := st.Exit.ByEnd[side][messages.EndEngineShutdown]; n != 0 {
			t.Errorf("dr-a ended %d flow(s) (%s) with engine_shutdown: the drain should let them finish", n, side)
		}
	}
	if err := exitA.DrainExit(ctx); err != nil {
		t.Errorf("DrainExit on a drained exit: %v, want nil", err)
	}
	if _, err := exitA.ExitStatus(ctx); err != nil {
		t.Errorf("ExitStatus after the drain: %v", err)
	}
	ev.none(t, append(gone, messages.StateReconnecting)...)
	t.Logf("dr-a drained and stopped %v after DrainExit", ms(took))
}

// TestExitDrainNowhereToGo: a tunnel whose only exit drains stays on it — new connections still go
// through it — until the drain timeout ends the flow left, and the exit's goodbye sends the tunnel
// Reconnecting.
func TestExitDrainNowhereToGo(t *testing.T) {
	const drain = 1500 * time.Millisecond
	echo := startServer(t, echoHandler)
	ns := startNATS(t, nil)
	exitC := drainingExit(t, ns, "dr-c", drain)
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "dr-c", Health: fastHealth()})
	ev.id = tun.ID()
	held := mustSocks(t, tun.SOCKSAddr(), echo.Addr()) // a flow held open through the drain
	defer held.Close()
	if err := roundTrip(held, "before"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	drained := drainAsync(exitC)
	testutil.Eventually(t, 5*time.Second, "the exit to refuse sessions", func() bool {
		_, err := client.OpenTunnel(context.Background(), engine.TunnelSpec{Exit: "dr-c", SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
			HandshakeTimeout: engine.Duration(time.Second)})
		return errors.Is(err, engine.ErrExitDraining)
	})
	c := mustSocks(t, tun.SOCKSAddr(), echo.Addr()) // new connections still go to the draining exit
	defer c.Close()
	if err := roundTrip(c, "during the drain"); err != nil {
		t.Fatalf("a new connection while the only exit drains: %v", err)
	}
	ev.none(t, messages.StateSwitching, messages.StateReconnecting, messages.StateClosing, messages.StateFailed)

	down := ev.await(t, 10*time.Second, messages.StateReconnecting, messages.StateSwitching, messages.StateClosing, messages.StateFailed)
	after := since(start, down)
	t.Logf("drain (%v) → reconnecting %v (%s)", drain, ms(after), down.Cause)
	if after < drain-100*time.Millisecond {
		t.Errorf("the tunnel left its draining exit after %v, before the drain timeout (%v)", after, drain)
	}
	if err := testutil.Await(t, drained, 10*time.Second, "DrainExit to return"); err != nil {
		t.Fatalf("DrainExit: %v", err)
	}
	if err, _, _ := readUntilEnd(held, 10*time.Second); isTimeoutErr(err) {
		t.Errorf("the held flow is still open after the drain timeout: %v", err)
	}
}

// TestForgedDrainNoticeMovesNothing: an attacker on the bus publishes drain notices for a tunnel's
// session on the client's events subject — one signed by its own identity, one claiming the
// exit's identity with a bad signature. Both are dropped and counted; the tunnel stays on its exit.
func TestForgedDrainNoticeMovesNothing(t *testing.T) {
	ns := startNATS(t, nil)
	exitA := drainingExit(t, ns, "fd-a", time.Minute)
	drainingExit(t, ns, "fd-b", time.Minute)
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "fd-a", Exits: []string{"fd-b"}})
	ev.id = tun.ID()
	info, err := tun.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	evil := newAttacker(t, ns.URL())
	forged := client.SignalingStats().Forged
	own := &messages.SessionDraining{SessionID: info.SessionID, ExitID: "fd-a", DrainMS: 5000}
	evil.id.SignSessionDraining(own, time.Now())
	claimed := *own
	claimed.Signer = exitA.ClientID() // the exit's identity, the attacker's signature
	for _, d := range []*messages.SessionDraining{own, &claimed} {
		evil.publish(signaling.ClientSubject(client.ClientID()), "", messages.TypeSessionDraining, d)
	}
	testutil.Eventually(t, 5*time.Second, "both forged notices counted", func() bool { return client.SignalingStats().Forged >= forged+2 })
	ev.quiet(t, time.Second, messages.StateSwitching, messages.StateReconnecting, messages.StateClosing, messages.StateFailed)
	after, err := tun.Info(context.Background())
	if err != nil || after.ExitID != "fd-a" || after.SessionID != info.SessionID || after.State != messages.StateUp {
		t.Errorf("after the forged notices: %+v, %v; want Up on fd-a, same session", after, err)
	}
}
