package test

// The local proxies from a hostile LAN's point of view: authentication on both proxies, and a
// handshake budget that a flood of stalled clients cannot use to keep a real client out.

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

func tunnelStats(t testing.TB, tun *engine.Tunnel) messages.ConnectionStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := tun.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestProxyAuthentication: with users configured, both proxies serve only clients with the right
// credentials; every failure is refused with the protocol's own answer and counted as auth_failed.
func TestProxyAuthentication(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	exitEng := startExitEngine(t, "auth-x", listenTCP)
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "auth-x",
		Auth: engine.ProxyAuth{Users: []engine.ProxyUser{{User: "alice", Password: "wonder"}}}})

	socks := func(auth *proxy.Auth) *http.Client {
		d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), auth, &net.Dialer{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{Dial: d.Dial, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	}
	httpProxy := func(user *url.Userinfo) *http.Client {
		u := &url.URL{Scheme: "http", Host: tun.HTTPAddr(), User: user}
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 30 * time.Second}
	}
	if err := download(socks(&proxy.Auth{User: "alice", Password: "wonder"}), srv.URL, 91, 256<<10); err != nil {
		t.Fatalf("SOCKS5 with the right credentials: %v", err)
	}
	if err := download(httpProxy(url.UserPassword("alice", "wonder")), srv.URL, 92, 256<<10); err != nil {
		t.Fatalf("HTTP proxy with the right credentials: %v", err)
	}
	failures := 0
	for name, c := range map[string]*http.Client{
		"socks5 wrong password": socks(&proxy.Auth{User: "alice", Password: "nope"}),
		"socks5 unknown user":   socks(&proxy.Auth{User: "mallory", Password: "wonder"}),
		"socks5 no auth":        socks(nil),
	} {
		if err := download(c, srv.URL, 93, 10); err == nil {
			t.Errorf("%s: served", name)
		}
		failures++
	}
	for name, u := range map[string]*url.Userinfo{"http wrong password": url.UserPassword("alice", "nope"), "http none": nil} {
		resp, err := httpProxy(u).Get(srv.URL + "/data?seed=1&n=10")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusProxyAuthRequired || resp.Header.Get("Proxy-Authenticate") == "" {
			t.Errorf("%s: %s, Proxy-Authenticate %q; want 407 with a challenge", name, resp.Status, resp.Header.Get("Proxy-Authenticate"))
		}
		failures++
	}
	waitFor(t, 5*time.Second, "every failure to be counted", func() bool {
		return tunnelStats(t, tun).ByEnd[messages.SideIncoming][messages.EndAuthFailed] == uint64(failures)
	})
}

// TestStalledHandshakesCannotLockOut: more clients than max_connections connect and send one
// byte, then nothing. A real client that arrives after them is served at once: handshakes have a
// budget of their own, and the oldest stalled one gives way to a new one.
func TestStalledHandshakesCannotLockOut(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	exitEng := startExitEngine(t, "stall-x", listenTCP)
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "stall-x", MaxConnections: 8,
		Handshake: engine.HandshakeLimits{Timeout: engine.Duration(time.Minute), MaxPending: 16}})
	opened := time.Now()
	const stalled = 40
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range stalled {
		c, err := net.Dial("tcp", tun.SOCKSAddr())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte{5}); err != nil { // the start of a greeting, and then nothing
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// All but the newest 16 were evicted to make room.
	// All but the newest 16 were evicted to make room — and do not count as established either.
	waitFor(t, 10*time.Second, "the oldest stalled handshakes to be evicted", func() bool {
		return tunnelStats(t, tun).ByEnd[messages.SideIncoming][messages.EndLimit] >= stalled-16
	})
	t.Logf("%d stalled clients connected; the oldest %d evicted after %v", stalled, stalled-16, time.Since(opened).Round(time.Millisecond))
	start := time.Now()
	if err := download(socksClient(t, tun), srv.URL, 95, 128<<10); err != nil {
		t.Fatalf("a real client after %d stalled ones: %v", stalled, err)
	}
	d := time.Since(start)
	t.Logf("a real client after them: served in %v", d.Round(time.Millisecond))
	if d > 2*time.Second*time.Duration(raceSlowdown) {
		t.Errorf("the real client waited %v", d)
	}
}

// TestHandshakeTimeout: a client that does not finish its handshake in time is closed, with its
// own end reason.
func TestHandshakeTimeout(t *testing.T) {
	exitEng := startExitEngine(t, "slow-x", listenTCP)
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "slow-x", Handshake: engine.HandshakeLimits{Timeout: engine.Duration(300 * time.Millisecond)}})
	for _, addr := range []string{tun.SOCKSAddr(), tun.HTTPAddr()} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _ = c.Write([]byte{5}) // SOCKS5: a greeting that never finishes; HTTP: a request line that never does
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c)
		c.Close()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: still open after 10 s", addr)
			}
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("%s: closed after %v, before the 300 ms budget", addr, d)
		}
	}
	waitFor(t, 5*time.Second, "both timeouts to be counted", func() bool {
		return tunnelStats(t, tun).ByEnd[messages.SideIncoming][messages.EndHandshakeTimeout] == 2
	})
}

// TestMaxConnectionsHoldsAcrossHandshakes: clients that all connect first and finish their
// handshakes afterwards are admitted up to max_connections; the rest are refused (SOCKS5 0x01)
// and counted as limit.
func TestMaxConnectionsHoldsAcrossHandshakes(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	exitEng := startExitEngine(t, "max-x", listenTCP)
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "max-x", MaxConnections: 2})
	origin, err := netip.ParseAddrPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	const clients = 6
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range clients {
		c, err := net.Dial("tcp", tun.SOCKSAddr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte{5}); err != nil { // all in their handshake at once
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	a, p := origin.Addr().As4(), origin.Port()
	served := 0
	for i, c := range conns {
		req := append([]byte{1, 0, 5, 1, 0, 1}, a[:]...)
		req = append(req, byte(p>>8), byte(p))
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, 12)
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		switch {
		case reply[0] == 5 && reply[1] == 0 && reply[3] == 0: // method, then success
			served++
		case reply[3] != 1:
			t.Fatalf("client %d: reply %x, want success or general failure", i, reply)
		}
	}
	if served != 2 {
		t.Fatalf("%d of %d clients established, want max_connections = 2", served, clients)
	}
	waitFor(t, 5*time.Second, "the refusals to be counted", func() bool {
		return tunnelStats(t, tun).ByEnd[messages.SideIncoming][messages.EndLimit] == clients-2
	})
}
