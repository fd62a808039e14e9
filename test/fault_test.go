package test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// natsServer runs a standalone NATS server on 127.0.0.1 that a test can stop and start again on
// the same port.
type natsServer struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

func startNATS(t testing.TB, mutate func(*server.Options)) *natsServer {
	opts := natstest.DefaultTestOptions
	opts.Host, opts.Port = "127.0.0.1", -1
	if mutate != nil {
		mutate(&opts)
	}
	n := &natsServer{t: t, opts: opts}
	n.srv = natstest.RunServer(&n.opts)
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port // a restart comes back on the same port
	if n.opts.Cluster.Port == -1 {
		n.opts.Cluster.Port = n.srv.ClusterAddr().Port
	}
	t.Cleanup(n.Stop)
	return n
}

func (n *natsServer) URL() string { return n.srv.ClientURL() }

// Stop shuts the server down and waits.
func (n *natsServer) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// Restart starts it again on the same port.
func (n *natsServer) Restart() {
	n.srv = natstest.RunServer(&n.opts)
}

// tunnelEvents collects tunnel transitions from an engine's events; once id is set, only that
// tunnel's count.
type tunnelEvents struct {
	ch chan engine.Event
	id string
}

// watchTunnel starts collecting e's tunnel transitions; call it before opening the tunnel, then set
// id to the tunnel's ID if e has (or may get) other tunnels.
func watchTunnel(e *engine.Engine) *tunnelEvents {
	te := &tunnelEvents{ch: make(chan engine.Event, 256)}
	go func() {
		for ev := range e.Events() {
			if ev.Kind == engine.EventTunnelState {
				te.ch <- ev
			}
		}
		close(te.ch)
	}()
	return te
}

// await waits for a transition into state and returns it; it fails on one into any of bad.
func (te *tunnelEvents) await(t testing.TB, within time.Duration, to messages.TunnelState, bad ...messages.TunnelState) engine.Event {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ev, ok := <-te.ch:
			if !ok {
				t.Fatalf("events closed while waiting for %s", to)
			}
			if te.id != "" && ev.Tunnel != te.id {
				continue
			}
			for _, b := range bad {
				if ev.To == b {
					t.Fatalf("tunnel went %s → %s (%s) while waiting for %s", ev.From, ev.To, ev.Cause, to)
				}
			}
			if ev.To == to {
				return ev
			}
		case <-deadline:
			t.Fatalf("no transition to %s within %v", to, within)
		}
	}
}

// none fails if any transition already received went into one of bad; it does not wait.
func (te *tunnelEvents) none(t testing.TB, bad ...messages.TunnelState) {
	t.Helper()
	for {
		select {
		case ev, ok := <-te.ch:
			if !ok {
				return
			}
			if te.id != "" && ev.Tunnel != te.id {
				continue
			}
			for _, b := range bad {
				if ev.To == b {
					t.Fatalf("tunnel went %s → %s (%s)", ev.From, ev.To, ev.Cause)
				}
			}
		default:
			return
		}
	}
}

// quiet watches the tunnel for d — a fault's duration, not a synchronisation — and fails at once
// on a transition into any of bad.
func (te *tunnelEvents) quiet(t testing.TB, d time.Duration, bad ...messages.TunnelState) {
	t.Helper()
	end := time.After(d)
	for {
		select {
		case ev, ok := <-te.ch:
			if !ok {
				t.Fatalf("events closed while watching the tunnel")
			}
			if te.id != "" && ev.Tunnel != te.id {
				continue
			}
			for _, b := range bad {
				if ev.To == b {
					t.Fatalf("tunnel went %s → %s (%s)", ev.From, ev.To, ev.Cause)
				}
			}
		case <-end:
			return
		}
	}
}

// gone: states a tunnel that is meant to heal must never reach.
var gone = []messages.TunnelState{messages.StateClosing, messages.StateClosed, messages.StateFailed}

// faultRounds is how many times each fault scenario hits the same tunnel: a fault handled once
// and mishandled the second time (a health monitor that dies at its first detection) must show.
const faultRounds = 3

// since is the time from t0 to ev, by the engine's own timestamp of the transition.
func since(t0 time.Time, ev engine.Event) time.Duration {
	if ev.Time.IsZero() {
		return time.Since(t0)
	}
	return ev.Time.Sub(t0)
}

// ms rounds a duration for the logs.
func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// healed checks, after fault round round (one reconnection each), that tun is the same tunnel on
// the same proxy port, on exit wantExit with round reconnections, and Up: a new session was just
// negotiated over signaling, so nothing left over from the dead exit's pings may keep it Degraded.
func healed(t testing.TB, tun *engine.Tunnel, ev *tunnelEvents, wantExit string, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := tun.Info(ctx)
	if err != nil {
		t.Fatalf("round %d: Info: %v", round, err)
	}
	if info.SOCKSAddr != tun.SOCKSAddr() || info.ExitID != wantExit || info.Reconnects != round {
		t.Fatalf("round %d: after the fault: proxy %s (was %s), exit %q (want %q), %d reconnects (want %d)",
			round, info.SOCKSAddr, tun.SOCKSAddr(), info.ExitID, wantExit, info.Reconnects, round)
	}
	if info.State != messages.StateUp {
		t.Fatalf("round %d: %s after the reconnect, want up", round, info.State)
	}
	ev.none(t, append([]messages.TunnelState{messages.StateDegraded}, gone...)...)
}

func fastHealth() engine.HealthConfig {
	return engine.HealthConfig{SignalingInterval: engine.Duration(200 * time.Millisecond), SignalingTimeout: engine.Duration(300 * time.Millisecond),
		BackoffMin: engine.Duration(100 * time.Millisecond), BackoffMax: engine.Duration(500 * time.Millisecond)}
}

// natsClient is a client engine's config on NATS server ns.
func natsClient(ns *natsServer) engine.Config {
	return engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}}}
}

// relayedExit starts an exit whose clients reach it through a relay the test controls.
func relayedExit(t testing.TB, id string, natsURL string) (*engine.Engine, *Relay) {
	relay := NewRelay(t)
	listen := testutil.FreeUDPAddr(t)
	e := startExitEngine(t, id, func(c *engine.Config) {
		c.NATS.URLs = []string{natsURL}
		c.Exit.Listen, c.Exit.Endpoint = listen.String(), relay.Addr().String()
	})
	relay.SetTarget(listen)
	return e, relay
}

// TestBlackholeReconnects: the data plane is cut, three times on the same tunnel: each cut is
// detected (Reconnecting) within 5 s; restored, the tunnel is Up again by itself, and a download
// through the same proxy address arrives intact.
func TestBlackholeReconnects(t *testing.T) {
	srv, _ := slowServer(t)
	ns := startNATS(t, nil)
	_, relay := relayedExit(t, "holed", ns.URL())
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "holed", Health: fastHealth(), HandshakeTimeout: engine.Duration(2 * time.Second)})
	ev.id = tun.ID()
	if err := slowDownload(socksClient(t, tun), srv.URL, 21, 64<<10, 10); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= faultRounds; round++ {
		relay.Blackhole()
		cut := time.Now()
		down := ev.await(t, 10*time.Second, messages.StateReconnecting, gone...)
		detected := since(cut, down)
		if detected > 5*time.Second {
			t.Errorf("round %d: dead data plane detected after %v, want within 5 s", round, detected)
		}
		relay.Restore()
		restored := time.Now()
		up := ev.await(t, 20*time.Second, messages.StateUp, gone...)
		t.Logf("round %d: blackhole → reconnecting %v (%s); blackhole → up %v; restore → up %v",
			round, ms(detected), down.Cause, ms(since(cut, up)), ms(since(restored, up)))
		healed(t, tun, ev, "holed", round)
		if err := slowDownload(socksClient(t, tun), srv.URL, uint64(21+round), 256<<10, 10); err != nil {
			t.Fatalf("round %d: download after recovery: %v", round, err)
		}
	}
}

// TestExitKilledAndRestarted: an exit that dies without a word and comes back with the same
// identity, three times: each death is detected within 5 s, and the client recovers on the same
// tunnel and proxy port without a restart.
func TestExitKilledAndRestarted(t *testing.T) {
	srv, _ := slowServer(t)
	ns := startNATS(t, nil)
	exitCfg := func(c *engine.Config) {
		c.NATS.URLs = []string{ns.URL()}
		c.Identity = "qg5W3UO9EfUQ0J9UmpFjTcVfrAsoPb5lFMbJ0w2bR2w="
	}
	x := startExitEngine(t, "phoenix", exitCfg)
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "phoenix", Health: fastHealth(), HandshakeTimeout: engine.Duration(2 * time.Second)})
	ev.id = tun.ID()
	for round := 1; round <= faultRounds; round++ {
		killed := time.Now()
		x.Kill()
		down := ev.await(t, 10*time.Second, messages.StateReconnecting, gone...)
		detected := since(killed, down)
		if detected > 5*time.Second {
			t.Errorf("round %d: dead exit detected after %v, want within 5 s", round, detected)
		}
		restarting := time.Now()
		x = startExitEngine(t, "phoenix", exitCfg)
		up := ev.await(t, 20*time.Second, messages.StateUp, gone...)
		t.Logf("round %d: kill → reconnecting %v (%s); kill → up %v; restart → up %v",
			round, ms(detected), down.Cause, ms(since(killed, up)), ms(since(restarting, up)))
		healed(t, tun, ev, "phoenix", round)
		if err := slowDownload(socksClient(t, tun), srv.URL, uint64(30+round), 256<<10, 10); err != nil {
			t.Fatalf("round %d: download after the exit came back: %v", round, err)
		}
	}
}

// TestLossyPathStaysUp: a path that drops 3% of datagrams both ways is slow, not dead: the tunnel
// must not reconnect, and a download still arrives intact.
func TestLossyPathStaysUp(t *testing.T) {
	srv, _ := slowServer(t)
	ns := startNATS(t, nil)
	_, relay := relayedExit(t, "lossy", ns.URL())
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "lossy", Health: fastHealth()})
	ev.id = tun.ID()
	relay.Lossy(30)
	if err := slowDownload(socksClient(t, tun), srv.URL, 51, 512<<10, 10); err != nil {
		t.Fatalf("download over a lossy path: %v", err)
	}
	// Three health intervals of loss with no traffic (probes only): no reconnect, even a brief one.
	ev.quiet(t, 3*time.Second, append([]messages.TunnelState{messages.StateReconnecting}, gone...)...)
	info, err := tun.Info(context.Background())
	if err != nil || info.Reconnects != 0 || (info.State != messages.StateUp && info.State != messages.StateDegraded) {
		t.Fatalf("after 3 s at 3%% loss: %+v, %v", info, err)
	}
	t.Logf("relay passed %d datagrams at 3%% loss; tunnel %s, %d reconnects", relay.Passed.Load(), info.State, info.Reconnects)
}

// TestExitReleasesSilentSessions: a client that dies without a goodbye has its session (WireGuard
// peer, address) released by the exit after session_idle_timeout; a live but idle tunnel keeps its
// session, because its signed pings (here every 200 ms; it sends no packet at all while its
// receive counter moves) reach the exit.
func TestExitReleasesSilentSessions(t *testing.T) {
	srv, _ := slowServer(t)
	ns := startNATS(t, nil)
	exitEng := startExitEngine(t, "reaper", func(c *engine.Config) {
		c.NATS.URLs = []string{ns.URL()}
		c.Exit.SessionIdleTimeout = engine.Duration(1500 * time.Millisecond)
	})
	live := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}}})
	liveTun := openTunnelSpec(t, live, engine.TunnelSpec{Exit: "reaper", Health: fastHealth()})
	doomed := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}}})
	openTunnelSpec(t, doomed, engine.TunnelSpec{Exit: "reaper"})
	opened := map[string]bool{}
	testutil.AwaitMatch(t, exitEng.Events(), 10*time.Second, "both sessions to open", func(ev engine.Event) bool {
		if ev.Kind == engine.EventSessionOpened {
			opened[ev.Session] = true
		}
		return len(opened) == 2
	})
	doomed.Kill() // no goodbye
	killed := time.Now()
	testutil.AwaitMatch(t, exitEng.Events(), 10*time.Second, "the exit to release the dead client's session",
		func(ev engine.Event) bool { return ev.Kind == engine.EventSessionClosed })
	released := time.Since(killed)
	// The live tunnel idles past the timeout (the fault's duration): its session must stay.
	idle := time.After(2 * time.Second)
	for watching := true; watching; {
		select {
		case ev, ok := <-exitEng.Events():
			if !ok {
				t.Fatal("the exit's events closed")
			}
			if ev.Kind == engine.EventSessionClosed {
				t.Fatalf("a live idle tunnel's session was released too: %+v", ev)
			}
		case <-idle:
			watching = false
		}
	}
	if err := slowDownload(socksClient(t, liveTun), srv.URL, 61, 64<<10, 10); err != nil {
		t.Fatalf("live tunnel after the sweep: %v", err)
	}
	t.Logf("dead client's session released %v after it died (timeout 1.5 s)", released.Round(time.Millisecond))
}
