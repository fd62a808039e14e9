package test

import (
	"context"
	"fmt"
	"net"
	"net/url"
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

// TestSignalingOutageKeepsTunnelUp: NATS goes away during a transfer, three times on the same
// tunnel: each time the tunnel goes Degraded, never Reconnecting; NATS stays down until the
// transfer has completed intact, and once it is back signaling recovers by itself (Up).
func TestSignalingOutageKeepsTunnelUp(t *testing.T) {
	srv, started := slowServer(t)
	ns := startNATS(t, nil)
	startExitEngine(t, "sig", func(c *engine.Config) { c.NATS.URLs = []string{ns.URL()} })
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "sig", Health: fastHealth()})
	ev.id = tun.ID()
	bad := append([]messages.TunnelState{messages.StateReconnecting}, gone...)
	for round := 1; round <= faultRounds; round++ {
		done := make(chan error, 1)
		go func() { done <- slowDownload(socksClient(t, tun), srv.URL, uint64(10+round), 2<<20, 2500) }()
		awaitStarted(t, started)
		stopped := time.Now()
		ns.Stop()
		deg := ev.await(t, 5*time.Second, messages.StateDegraded, bad...)
		// NATS stays down for the rest of the transfer (30 s in the issue, 2.5 s here).
		if err := testutil.Await(t, done, 30*time.Second, "the transfer across the signaling outage"); err != nil {
			t.Fatalf("round %d: transfer across the signaling outage: %v", round, err)
		}
		restarted := time.Now()
		ns.Restart()
		up := ev.await(t, 10*time.Second, messages.StateUp, bad...)
		info, err := tun.Info(context.Background())
		if err != nil || info.Reconnects != 0 || info.SOCKSAddr != tun.SOCKSAddr() {
			t.Fatalf("round %d: after the outage: %+v, %v", round, info, err)
		}
		t.Logf("round %d: NATS down → degraded %v; NATS back → up %v", round, ms(since(stopped, deg)), ms(since(restarted, up)))
	}
	ev.none(t, bad...)
}

// TestNATSClusterFailover: the NATS node the client is connected to shuts down mid-transfer, three
// times (the node comes back in between): the tunnel stays up, never reconnects, and signaling
// moves to another node of the cluster each time.
func TestNATSClusterFailover(t *testing.T) {
	srv, started := slowServer(t)
	cluster := func(routes string) func(*server.Options) {
		return func(o *server.Options) {
			o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "warren", "127.0.0.1", -1
			if routes != "" {
				o.Routes = server.RoutesFromStr(routes)
			}
		}
	}
	a := startNATS(t, cluster(""))
	seed := fmt.Sprintf("nats://127.0.0.1:%d", a.srv.ClusterAddr().Port)
	b := startNATS(t, cluster(seed))
	c := startNATS(t, cluster(seed))
	nodes := []*natsServer{a, b, c}
	formed := func() bool {
		for _, n := range nodes {
			if n.srv.NumRoutes() < 2 {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "the cluster to form", formed)
	startExitEngine(t, "clustered", func(cfg *engine.Config) { cfg.NATS.URLs = []string{b.URL(), c.URL()} })
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{a.URL(), b.URL(), c.URL()}}})
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "clustered", Health: fastHealth()})
	ev.id = tun.ID()
	bad := append([]messages.TunnelState{messages.StateReconnecting}, gone...)
	for round := 1; round <= faultRounds; round++ {
		done := make(chan error, 1)
		go func() { done <- slowDownload(socksClient(t, tun), srv.URL, uint64(100+round), 1<<20, 1000) }()
		awaitStarted(t, started)
		// nats.go randomises the server list by default: shut down whichever node the client is on.
		on := client.NATSConnectedURL()
		var victim *natsServer
		for _, n := range nodes {
			if on != "" && mustHost(n.URL()) == mustHost(on) {
				victim = n
			}
		}
		if victim == nil {
			t.Fatalf("round %d: client connected to %q, none of the nodes", round, on)
		}
		stopped := time.Now()
		victim.Stop()
		if err := testutil.Await(t, done, 30*time.Second, "the transfer across the node's shutdown"); err != nil {
			t.Fatalf("round %d: transfer across the node's shutdown: %v", round, err)
		}
		waitFor(t, 10*time.Second, "the client to reconnect to another node", func() bool {
			now := client.NATSConnectedURL()
			return now != "" && mustHost(now) != mustHost(on)
		})
		moved := time.Since(stopped)
		// Signaling works through the new node: a reconfigure negotiates a new session.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := tun.Reconfigure(ctx); err != nil {
			cancel()
			t.Fatalf("round %d: reconfigure after the node went away: %v", round, err)
		}
		info, _ := tun.Info(ctx)
		cancel()
		if info.Reconnects != 0 || info.State != messages.StateUp {
			t.Fatalf("round %d: after failover: %+v", round, info)
		}
		ev.none(t, bad...)
		t.Logf("round %d: node %s down; client on %s after %v", round, mustHost(on), mustHost(client.NATSConnectedURL()), ms(moved))
		victim.Restart()
		waitFor(t, 15*time.Second, "the cluster to form again", formed)
	}
}

func mustHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
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

// twoExits serves exits alt-a and alt-b, each restartable as itself, and a client tunnel on alt-a
// with alt-b as its failover exit.
type twoExits struct {
	ids   [2]string
	start func(i int) *engine.Engine
	eng   [2]*engine.Engine
	tun   *engine.Tunnel
	ev    *tunnelEvents
}

func newTwoExits(t *testing.T, prefix string) *twoExits {
	ns := startNATS(t, nil)
	x := &twoExits{ids: [2]string{prefix + "-a", prefix + "-b"}}
	_, a := newIdentitySeed(t)
	_, b := newIdentitySeed(t)
	idents := [2]string{a, b}
	x.start = func(i int) *engine.Engine {
		return startExitEngine(t, x.ids[i], func(c *engine.Config) {
			c.NATS.URLs = []string{ns.URL()}
			c.Identity = idents[i]
		})
	}
	x.eng = [2]*engine.Engine{x.start(0), x.start(1)}
	client := startEngine(t, natsClient(ns))
	x.ev = watchTunnel(client)
	x.tun = openTunnelSpec(t, client, engine.TunnelSpec{Exit: x.ids[0], Exits: []string{x.ids[1]}, Health: fastHealth()})
	x.ev.id = x.tun.ID()
	return x
}

// TestFailoverAlternatesOnKill: with two exits configured, the tunnel's exit dies without a word:
// it fails over to the other in under 5 s (detection included). The dead exit is restarted, then
// the other one dies, and so on: A, B, A killed on the same tunnel.
func TestFailoverAlternatesOnKill(t *testing.T) {
	srv, _ := slowServer(t)
	x := newTwoExits(t, "fo")
	on := 0
	for round := 1; round <= faultRounds; round++ {
		victim, other := on, 1-on
		killed := time.Now()
		x.eng[victim].Kill()
		down := x.ev.await(t, 10*time.Second, messages.StateReconnecting, gone...)
		up := x.ev.await(t, 10*time.Second, messages.StateUp, gone...)
		detected, failedOver := since(killed, down), since(killed, up)
		t.Logf("round %d: %s killed → reconnecting %v (%s); killed → up on the other %v (%s)",
			round, x.ids[victim], ms(detected), down.Cause, ms(failedOver), up.Cause)
		if detected > 5*time.Second || failedOver > 5*time.Second {
			t.Errorf("round %d: dead exit detected after %v, failed over after %v, want both within 5 s", round, detected, failedOver)
		}
		healed(t, x.tun, x.ev, x.ids[other], round)
		if err := slowDownload(socksClient(t, x.tun), srv.URL, uint64(40+round), 128<<10, 10); err != nil {
			t.Fatalf("round %d: download after failover to %s: %v", round, x.ids[other], err)
		}
		if round < faultRounds {
			x.eng[victim] = x.start(victim) // the same exit, as itself: the next failover goes back to it
		}
		on = other
	}
}

// TestExitGoodbyeFailoverAlternates: with two exits configured, the tunnel's exit shuts down and
// says goodbye: the tunnel fails over to the other in under 1 s. The exit is restarted, then the
// other one shuts down, and so on, three times on the same tunnel.
func TestExitGoodbyeFailoverAlternates(t *testing.T) {
	srv, _ := slowServer(t)
	x := newTwoExits(t, "bye")
	on := 0
	for round := 1; round <= faultRounds; round++ {
		victim, other := on, 1-on
		closed := make(chan error, 1)
		said := time.Now()
		go func(e *engine.Engine) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			closed <- e.Close(ctx)
		}(x.eng[victim])
		down := x.ev.await(t, 5*time.Second, messages.StateReconnecting, gone...)
		up := x.ev.await(t, 5*time.Second, messages.StateUp, gone...)
		graceful := since(said, up)
		t.Logf("round %d: %s closed → reconnecting %v (%s); closed → up on the other %v (%s)",
			round, x.ids[victim], ms(since(said, down)), down.Cause, ms(graceful), up.Cause)
		if graceful > time.Second {
			t.Errorf("round %d: failover after goodbye took %v, want under 1 s", round, graceful)
		}
		healed(t, x.tun, x.ev, x.ids[other], round)
		if err := slowDownload(socksClient(t, x.tun), srv.URL, uint64(50+round), 128<<10, 10); err != nil {
			t.Fatalf("round %d: download after failover to %s: %v", round, x.ids[other], err)
		}
		if err := testutil.Await(t, closed, 30*time.Second, "exit "+x.ids[victim]+" Close to return"); err != nil {
			t.Fatalf("round %d: exit %s Close: %v", round, x.ids[victim], err)
		}
		if round < faultRounds {
			x.eng[victim] = x.start(victim)
		}
		on = other
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
// session, because its keepalives and health probes reach the exit.
func TestExitReleasesSilentSessions(t *testing.T) {
	srv, _ := slowServer(t)
	ns := startNATS(t, nil)
	exitEng := startExitEngine(t, "reaper", func(c *engine.Config) {
		c.NATS.URLs = []string{ns.URL()}
		c.Exit.SessionIdleTimeout = engine.Duration(1500 * time.Millisecond)
	})
	live := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{ns.URL()}}})
	liveTun := openTunnelSpec(t, live, engine.TunnelSpec{Exit: "reaper"})
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
