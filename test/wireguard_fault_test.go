package test

// Faults of WireGuard exits: the server restarted with its key, the path to it blackholed (found
// by the health hub's forced handshakes, then a failover to the next WireGuard exit).

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// The health policy of the fault tests, and the derived bounds.
const (
	wgInterval     = 200 * time.Millisecond
	wgFailures     = 3
	wgProbeTimeout = 150 * time.Millisecond
	wgHandshake    = time.Second            // each leg's setup, a reconnect attempt to a dead server included
	wgBackoffMin   = 100 * time.Millisecond // first wait between reconnect attempts (±20%)
	wgBackoffMax   = 500 * time.Millisecond
	wgRequest      = 500 * time.Millisecond // each request of a load loop
	// wgSlack covers the scheduling of the hub's timers and probes and of the request loops
	// under -race on two busy cores.
	wgSlack = time.Second
)

func wgFaultSpec(exit string, exits ...string) engine.TunnelSpec {
	return engine.TunnelSpec{Exit: exit, Exits: exits, HandshakeTimeout: engine.Duration(wgHandshake),
		Health: engine.HealthConfig{Interval: engine.Duration(wgInterval), Failures: wgFailures, ProbeTimeout: engine.Duration(wgProbeTimeout),
			BackoffMin: engine.Duration(wgBackoffMin), BackoffMax: engine.Duration(wgBackoffMax), ReconnectWait: engine.Duration(wgRequest)}}
}

// wgDetectBound is how long after its path is cut a tunnel in use finds its WireGuard exit dead.
// The first round after the cut may still count progress from before it (and take what was sent
// meanwhile as answered); the loop sends something (a new request's DNS query) at least every
// wgRequest, and the first round after such a send with nothing received probes the leg (a forced
// handshake), failing after the probe timeout; every following round probes the suspect again,
// and the Failures-th failure reconnects: at most an interval, a request, an interval, then
// Failures-1 intervals and a probe timeout.
const wgDetectBound = wgRequest + (wgFailures+1)*wgInterval + wgProbeTimeout + wgSlack

// proxyClient is an HTTP client through the tunnel's SOCKS5 proxy (socks5h: names resolve through
// the tunnel) whose requests each get at most limit.
func proxyClient(tun *engine.Tunnel, limit time.Duration) *http.Client {
	u, _ := url.Parse("socks5h://" + tun.SOCKSAddr())
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: limit}
}

// TestWireGuardExitServerRestart: the server restarts with the same key on the same port.
//
// Restarted at once: WireGuard does not notice by itself (the client sends under keys the new
// server does not know, and would start a handshake only after 15 s of sending unanswered), but
// the health hub does: a round in which the leg sent data and received nothing probes it, and the
// probe is a forced handshake, which the restarted server (same keys) answers. The session is
// renewed under the same leg: the tunnel never leaves Up (no transition, no reconnection, same
// session id, a handshake since the restart), and a new connection made right after the restart
// succeeds on a retransmission of its SYN under the new keys. gVisor resends a SYN after 1 s, then
// 2 s more: if the round that saw the SYN go out also saw the old server's last answer, it counts
// as progress, and only the first retransmission (1 s) gets the leg probed, so the second (3 s)
// is the one that gets through.
//
// Down for longer than the detection bound: the probes fail, the tunnel goes Reconnecting, tries
// the same (only) exit again and again, and is Up again, on the same proxy port, within a
// reconnect attempt and a backoff of the restart.
func TestWireGuardExitServerRestart(t *testing.T) {
	origin := namedOrigin(t, "origin")
	srv := startWGServerFor(t, hostOf(origin), testutil.WGServerConfig{})
	priv, clientKey, endpoint := srv.PrivateKey(), srv.ClientKey(), srv.Endpoint()
	restart := func() *testutil.WGServer {
		return startWGServerFor(t, hostOf(origin), testutil.WGServerConfig{PrivateKey: &priv, ClientKey: &clientKey, ListenAddr: endpoint.String()})
	}
	attempts := newLogCapture("reconnect attempt failed")
	client := startEngine(t, engine.Config{Logger: attempts.logger(), WireGuardExits: []engine.WireGuardExitSpec{wgSpec(t, "phoenix", srv)}})
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, wgFaultSpec("wg:phoenix"))
	ev.id = tun.ID()
	ev.await(t, 5*time.Second, messages.StateUp, gone...)
	before, err := tun.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byIP := "http://10.99.0.1:8080" // no DNS query: the first data packet is the connection's SYN
	hc := proxyClient(tun, 5*time.Second)
	if got, err := who(hc, byIP); err != nil || got != "origin" {
		t.Fatalf("before the restart: %q, %v", got, err)
	}

	t.Run("at once", func(t *testing.T) {
		srv.Close()
		srv = restart()
		restarted := time.Now()
		got, err := who(hc, byIP)
		took := time.Since(restarted)
		// At worst the SYN's first retransmission (1 s) gets the leg probed (a round and a probe
		// later) and its second (3 s) goes through.
		const bound = 3*time.Second + wgSlack
		t.Logf("restarted at once: a new connection answered %q (%v) %v after the restart (bound %v)", got, err, ms(took), bound)
		if err != nil || got != "origin" {
			t.Fatalf("the first connection after the restart: %q, %v", got, err)
		}
		if took > bound {
			t.Errorf("the first connection after the restart took %v, want within %v", took, bound)
		}
		if got, err := who(hc, wgBase); err != nil || got != "origin" {
			t.Fatalf("by name after the restart: %q, %v", got, err)
		}
		if srv.Received() == 0 {
			t.Error("the restarted server received nothing")
		}
		// Long enough for a reconnect to show if any check had failed: every check fails at most
		// Failures rounds and a probe after the restart.
		ev.quiet(t, wgFailures*wgInterval+wgProbeTimeout, append([]messages.TunnelState{messages.StateReconnecting, messages.StateDegraded}, gone...)...)
		after, err := tun.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if after.State != messages.StateUp || after.Reconnects != 0 || after.SessionID != before.SessionID || !after.LastHandshake.After(restarted) {
			t.Errorf("after the restart: %s, %d reconnects, session %s (was %s), last handshake %v (restart %v); want Up, 0, the same session, a handshake since",
				after.State, after.Reconnects, after.SessionID, before.SessionID, after.LastHandshake, restarted)
		}
	})

	t.Run("after an outage", func(t *testing.T) {
		load := startWhoLoop(proxyClient(tun, wgRequest), byIP, 2) // in use: the hub probes it every round
		defer load.wait()
		srv.Close()
		down := time.Now()
		rcn := ev.await(t, 2*wgDetectBound, messages.StateReconnecting, gone...)
		detected := since(down, rcn)
		t.Logf("server down → reconnecting %v (%s); bound %v", ms(detected), rcn.Cause, wgDetectBound)
		if detected > wgDetectBound {
			t.Errorf("the dead server was found after %v, want within %v", detected, wgDetectBound)
		}
		if !strings.Contains(rcn.Cause, "no handshake with the WireGuard server") {
			t.Errorf("reconnecting for %q, want failed handshake probes", rcn.Cause)
		}
		attempts.waitEnded(t, "a reconnect attempt to fail while the server is down", 1, func(logRecord) bool { return true })
		srv = restart()
		restarted := time.Now()
		up := ev.await(t, 10*time.Second, messages.StateUp, gone...)
		// The attempt under way when the server came back may have sent its initiation into the void
		// (it fails at its setup deadline); the next one, after a backoff, meets the new server.
		bound := wgHandshake + wgBackoffMax*6/5 + wgSlack
		t.Logf("restarted → up %v (%s); bound %v", ms(since(restarted, up)), up.Cause, bound)
		if d := since(restarted, up); d > bound {
			t.Errorf("up again %v after the restart, want within %v", d, bound)
		}
		healed(t, tun, ev, "wg:phoenix", 1)
		load.awaitAnswers(t, up.Time, 5, "origin")
		answers := load.wait()
		for _, a := range load.since(up.Time.Add(wgSlack)) {
			if a.err != nil {
				t.Errorf("a request started %v after the tunnel was up again failed: %v", ms(a.start.Sub(up.Time)), a.err)
			}
		}
		t.Logf("%d requests in the loop", len(answers))
	})
}

// TestWireGuardExitBlackholeFailover: a tunnel on WireGuard exit a (reached through a UDP relay)
// with b as its failover exit, in use by four request loops, each request asking the origin behind
// the server which server forwarded it. The relay blackholes a: the tunnel finds it within the
// detection bound computed from its health policy (wgDetectBound), tries a again first (a
// data-plane failure), which times out at its handshake timeout, then b after a backoff; the
// tunnel is Up on b, same proxy port, one reconnection, and every request made once it is Up is
// answered, by b.
func TestWireGuardExitBlackholeFailover(t *testing.T) {
	srvA := startWGServerFor(t, hostOf(namedOrigin(t, "a")), testutil.WGServerConfig{})
	srvB := startWGServerFor(t, hostOf(namedOrigin(t, "b")), testutil.WGServerConfig{})
	relay := testutil.StartUDPRelay(t, srvA.Endpoint())
	client := wgClient(t, wgSpecVia(t, "a", srvA, relay.Addr()), wgSpec(t, "b", srvB))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, wgFaultSpec("wg:a", "wg:b"))
	ev.id = tun.ID()
	load := startWhoLoop(proxyClient(tun, wgRequest), wgBase, 4)
	defer load.wait()
	load.awaitAnswers(t, time.Time{}, 8, "a")
	if relay.FromTarget.Load() == 0 {
		t.Fatal("nothing came back through the relay: the tunnel does not use it")
	}

	relay.SetBlackhole(true)
	cut := time.Now()
	rcn := ev.await(t, 2*wgDetectBound, messages.StateReconnecting, gone...)
	up := ev.await(t, 10*time.Second, messages.StateUp, gone...)
	detected, failedOver := since(cut, rcn), up.Time.Sub(rcn.Time)
	// The same exit is tried first after a data-plane failure: a's attempt times out, then b's
	// comes after the first backoff (its jitter included).
	failoverBound := wgHandshake + wgBackoffMin*6/5 + wgSlack
	t.Logf("blackhole → reconnecting %v (%s), bound %v; → up on b %v later (%s), bound %v",
		ms(detected), rcn.Cause, wgDetectBound, ms(failedOver), up.Cause, failoverBound)
	if detected > wgDetectBound {
		t.Errorf("the blackhole was found after %v, want within %v (policy: interval %v, failures %d, probe timeout %v)",
			detected, wgDetectBound, wgInterval, wgFailures, wgProbeTimeout)
	}
	if failedOver > failoverBound {
		t.Errorf("up on b %v after reconnecting, want within %v", failedOver, failoverBound)
	}
	healed(t, tun, ev, "wg:b", 1)
	received := srvB.Received()
	load.awaitAnswers(t, up.Time, 20, "b")
	answers := load.wait()

	var fromA, fromB, failed int
	for _, a := range answers {
		switch {
		case a.err != nil:
			failed++
		case a.who == "a":
			fromA++
			if a.end.After(cut.Add(wgSlack)) {
				t.Errorf("a request answered by a %v after the blackhole", ms(a.end.Sub(cut)))
			}
		case a.who == "b":
			fromB++
			if a.end.Before(up.Time) {
				t.Errorf("a request answered by b %v before the tunnel was up on b", ms(up.Time.Sub(a.end)))
			}
		default:
			t.Errorf("a request answered %q", a.who)
		}
	}
	for _, a := range load.since(up.Time) {
		if a.err != nil || a.who != "b" {
			t.Errorf("a request started %v after Up on b: %q, %v", ms(a.start.Sub(up.Time)), a.who, a.err)
		}
	}
	if srvB.Received() <= received {
		t.Error("server b received nothing while it answered")
	}
	t.Logf("%d requests: %d answered by a, %d by b, %d failed (during the blackhole and the failover)", len(answers), fromA, fromB, failed)
}
