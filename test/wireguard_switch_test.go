package test

// Switching between WireGuard exits and Warren exits, make-before-break, and the drains of a
// tunnel on a WireGuard exit (a Switch's, a Close's).

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestWireGuardExitSwitchUnderLoad: a tunnel on WireGuard exit wg:one switches to a Warren exit
// and back while four workers (two through each proxy) fetch payloads, each checked by sha256, on
// a new connection each, from "localhost:<port>". The Warren exit resolves that with the host's
// resolver (loopback allowed) and reaches origin "warren" there; the WireGuard server's DNS
// answers it with the server's address, whose same port the server forwards to another origin,
// "wg": every answer says which exit carried it. No request fails; every request made after a
// Switch returned goes through the new exit, and every one done before the Switch began through
// the old one; the tunnel never reconnects.
func TestWireGuardExitSwitchUnderLoad(t *testing.T) {
	viaWarren := namedOrigin(t, "warren")
	viaWG := namedOrigin(t, "wg")
	_, port, _ := net.SplitHostPort(hostOf(viaWarren))
	p, _ := strconv.Atoi(port)
	srv := startWGServerFor(t, "", testutil.WGServerConfig{Forward: map[uint16]string{uint16(p): hostOf(viaWG)},
		DNS: map[string][]netip.Addr{"localhost": {netip.MustParseAddr("10.99.0.1")}}})
	e := startExitEngine(t, "warren", func(c *engine.Config) { c.WireGuardExits = []engine.WireGuardExitSpec{wgSpec(t, "one", srv)} })
	ev := watchTunnel(e)
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "wg:one", DrainTimeout: engine.Duration(10 * time.Second)})
	ev.id = tun.ID()
	base := "http://localhost:" + port
	clients := []*http.Client{socksClient(t, tun), httpProxyClient(t, tun)}
	const workers, size = 4, 32 << 10
	load := startLoop(workers, func(w, i int) (string, error) {
		return fetchNamed(clients[w%2], base, uint64(w)<<32|uint64(i), size+int64(i%7)*1000)
	})
	defer load.wait()
	load.awaitEach(t, time.Time{}, 5)

	// switchTo switches the tunnel to exit and returns when the Switch call began and returned.
	switchTo := func(exit string) (began, returned time.Time) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		began = time.Now()
		if err := tun.Switch(ctx, exit); err != nil {
			t.Fatalf("Switch to %s: %v", exit, err)
		}
		returned = time.Now()
		t.Logf("Switch to %s returned after %v", exit, ms(returned.Sub(began)))
		ev.await(t, 5*time.Second, messages.StateUp, append(gone, messages.StateReconnecting)...)
		info, err := tun.Info(ctx)
		if err != nil || info.ExitID != exit || info.State != messages.StateUp || info.Reconnects != 0 {
			t.Fatalf("after the switch: %+v, %v; want Up on %s, no reconnection", info, err, exit)
		}
		return began, returned
	}
	toWarren, onWarren := switchTo("warren")
	load.awaitEach(t, onWarren, 5)
	toWG, onWG := switchTo("wg:one")
	load.awaitEach(t, onWG, 5)
	answers := load.wait()

	failed, by, across := 0, map[string]int{}, [2]int{}
	for _, a := range answers {
		for i, sw := range [][2]time.Time{{toWarren, onWarren}, {toWG, onWG}} {
			if a.start.Before(sw[1]) && a.end.After(sw[0]) {
				across[i]++
			}
		}
		if a.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("worker %d, request started %v: %v", a.worker, a.start.Format("15:04:05.000"), a.err)
			}
			continue
		}
		by[a.who]++
		want := ""
		switch {
		case a.end.Before(toWarren), !a.start.Before(onWG):
			want = "wg"
		case !a.start.Before(onWarren) && a.end.Before(toWG):
			want = "warren"
		}
		if want != "" && a.who != want {
			t.Errorf("worker %d: a request from %v to %v was served by %q, want %q", a.worker,
				a.start.Format("15:04:05.000"), a.end.Format("15:04:05.000"), a.who, want)
		}
	}
	t.Logf("%d requests, %d failed; served by %v; in flight during the switches: %v", len(answers), failed, by, across)
	if across[0] == 0 || across[1] == 0 {
		t.Errorf("requests in flight during the switches: %v; the load should run across each", across)
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the switches", failed, len(answers))
	}
	ev.none(t, append(gone, messages.StateReconnecting)...)
}

// drainEnv is a client engine with WireGuard exits wg:one and wg:two, each a server forwarding
// port wgOrigin to an origin that answers /who with the server's name and port 7 to an echo
// server, and a tunnel on wg:one.
type drainEnv struct {
	e    *engine.Engine
	tun  *engine.Tunnel
	echo string // host:port of the echo port, by name
}

func newDrainEnv(t *testing.T) *drainEnv {
	echo := startServer(t, echoHandler)
	var specs []engine.WireGuardExitSpec
	for _, name := range []string{"one", "two"} {
		srv := startWGServerFor(t, "", testutil.WGServerConfig{Forward: map[uint16]string{
			wgOrigin: hostOf(namedOrigin(t, name)), 7: echo.Addr()}})
		specs = append(specs, wgSpec(t, name, srv))
	}
	e := wgClient(t, specs...)
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "wg:one", Connections: engine.ConnLimits{CloseGrace: engine.Duration(200 * time.Millisecond)}})
	return &drainEnv{e: e, tun: tun, echo: wgName + ":7"}
}

// echoConn is a SOCKS5 connection by name to the echo port, proven by a round trip.
func (d *drainEnv) echoConn(t testing.TB) net.Conn {
	t.Helper()
	c, code, err := socksRequest(d.tun.SOCKSAddr(), socksCmdConnect, wgName, 7)
	if err != nil || code != socksSucceeded {
		t.Fatalf("SOCKS5 CONNECT %s: reply %#02x, %v", d.echo, code, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := roundTrip(c, "hello"); err != nil {
		t.Fatal(err)
	}
	return c
}

// drained checks two connections through a drain of drain that began at start: finishing still
// carries a round trip during it and is closed by its client (normal); staying is still open when
// the drain runs out and is ended gracefully (EOF) no sooner.
func drained(t *testing.T, start time.Time, drain time.Duration, finishing, staying net.Conn) {
	t.Helper()
	if err := roundTrip(finishing, "during the drain"); err != nil {
		t.Fatalf("a connection on the draining exit: %v", err)
	}
	finishing.Close()
	err, n, end := readUntilEnd(staying, 10*time.Second)
	if err != io.EOF || n != 0 {
		t.Errorf("the connection open at the end of the drain: read %d bytes, then %v; want EOF", n, err)
	}
	if took := end.Sub(start); took < drain {
		t.Errorf("the connection open through the drain ended after %v, before the drain (%v) ran out", took, drain)
	}
	t.Logf("drain %v: the connection left open ended %v after it began", drain, ms(end.Sub(start)))
}

// TestWireGuardExitDrainReasons: connections on a WireGuard exit through the drains.
//
// A Switch from wg:one to wg:two with a drain of 600 ms: new connections go to wg:two at once,
// while the old leg still carries the connections open on it; one closed during the drain ends
// normal, one still open when the drain runs out ends gracefully with drain_timeout (Tunnel.Stats,
// by side). A Close with a drain of 400 ms, then, with two connections on wg:two: the same reasons,
// counted by the engine (the tunnel's stats are gone with it), and Close returns nil once the drain
// and the release are done.
func TestWireGuardExitDrainReasons(t *testing.T) {
	d := newDrainEnv(t)
	finishing, staying := d.echoConn(t), d.echoConn(t)
	hc := proxyClient(d.tun, 10*time.Second)
	if got, err := who(hc, wgBase); err != nil || got != "one" {
		t.Fatalf("before the switch: %q, %v", got, err)
	}
	const switchDrain = 600 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.tun.Switch(ctx, "wg:two", engine.WithDrainTimeout(switchDrain)); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if got, err := who(hc, wgBase); err != nil || got != "two" {
		t.Errorf("a new connection after the switch: %q, %v; want it on wg:two", got, err)
	}
	drained(t, start, switchDrain, finishing, staying)
	st := poll(t, "the tunnel's connections to end", d.tun.Stats, func(s messages.ConnectionStats) bool { return s.Ended >= 4 && s.Active == 0 })
	wantEnds(t, "tunnel after the switch", st, 4, ec{rNormal: 3, rDrain: 1}, ec{rNormal: 3, rDrain: 1})

	base := settled(t, d.e)
	finishing, staying = d.echoConn(t), d.echoConn(t)
	const closeDrain = 400 * time.Millisecond
	closed := make(chan error, 1)
	start = time.Now()
	go func() { closed <- d.tun.Close(ctx, engine.WithDrainTimeout(closeDrain)) }()
	waitTunnelState(t, d.e, d.tun.ID(), messages.StateDraining)
	if c, err := net.DialTimeout("tcp", d.tun.SOCKSAddr(), time.Second); err == nil {
		c.Close()
		t.Error("a new proxy connection was accepted while the tunnel drained")
	}
	drained(t, start, closeDrain, finishing, staying)
	if err := testutil.Await(t, closed, 20*time.Second, "Close to return"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	delta := engineDelta(t, d.e, base, 2, 0)
	wantEnds(t, "engine client after the close", delta.Client, 2, ec{rNormal: 1, rDrain: 1}, ec{rNormal: 1, rDrain: 1})
	if _, err := d.tun.Stats(ctx); !errors.Is(err, engine.ErrTunnelClosed) {
		t.Errorf("Stats after Close: %v, want ErrTunnelClosed", err)
	}
}

const rDrain = messages.EndDrainTimeout
