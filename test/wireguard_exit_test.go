package test

// WireGuard exits (docs/wireguard.md): a Warren client tunnel whose exit is a plain WireGuard
// server (testutil.WGServer: upstream wireguard-go, no Warren code), named in the client engine's
// wireguard_exits. Names given to the proxies resolve through the server's DNS inside the tunnel.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

func TestWireGuardExitSmoke(t *testing.T) {
	origin := startServer(t, echoHandler)
	srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{})
	client := wgClient(t, wgSpec(t, "one", srv))
	tun := openTunnel(t, client, "wg:one")
	d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", fmt.Sprintf("%s:%d", wgName, wgOrigin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, "hello through a plain WireGuard server"); err != nil {
		t.Fatal(err)
	}
}

// TestWireGuardExitBulk moves 64 MiB down and 64 MiB up through one WireGuard exit through SOCKS5
// (16 MiB each way through the HTTP proxy) — SOCKS5 by name (socks5h: the name resolves through the server's DNS inside the tunnel)
// and the HTTP proxy (absolute-URI requests) — and 8 MiB down over a CONNECT to a TLS origin,
// comparing sha256 at both ends. The server's own counter shows both uploads went through it.
func TestWireGuardExitBulk(t *testing.T) {
	origin := newPayloadServer()
	defer origin.Close()
	originTLS := newPayloadServerTLS()
	defer originTLS.Close()
	const tlsPort = 8443
	srv := startWGServerFor(t, "", testutil.WGServerConfig{Forward: map[uint16]string{
		wgOrigin: hostOf(origin), tlsPort: strings.TrimPrefix(originTLS.URL, "https://")}})
	client := wgClient(t, wgSpec(t, "bulk", srv))
	tun := openTunnel(t, client, "wg:bulk")
	// 64 MiB each way through SOCKS5; 16 MiB each way through the HTTP proxy, whose data path
	// after the request is the same (the suite's time is counted).
	received, uploaded := srv.Received(), int64(0)
	for _, c := range []struct {
		name   string
		client *http.Client
		n      int64
	}{{"socks5", socksClient(t, tun), 64 << 20}, {"http", httpProxyClient(t, tun), 16 << 20}} {
		uploaded += c.n
		t.Run(c.name+"/download", func(t *testing.T) {
			start := time.Now()
			if err := download(c.client, wgBase, 1, c.n); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d MiB down in %v", c.n>>20, ms(time.Since(start)))
		})
		t.Run(c.name+"/upload", func(t *testing.T) {
			start := time.Now()
			if err := upload(c.client, wgBase, 2, c.n); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d MiB up in %v", c.n>>20, ms(time.Since(start)))
		})
	}
	t.Run("http-connect", func(t *testing.T) {
		u, _ := url.Parse("http://" + tun.HTTPAddr())
		tr := &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}
		tr.TLSClientConfig = originTLS.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		tr.TLSClientConfig.ServerName = "example.com" // in httptest's certificate; the CONNECT is by wgName
		c := &http.Client{Transport: tr, Timeout: time.Minute}
		if err := download(c, fmt.Sprintf("https://%s:%d", wgName, tlsPort), 3, 8<<20); err != nil {
			t.Fatal(err)
		}
	})
	if got := srv.Received() - received; got < uint64(uploaded) {
		t.Errorf("the WireGuard server received %d bytes from the client, want at least the two uploads (%d)", got, uploaded)
	}
	st := poll(t, "the tunnel's connections to end", tun.Stats, func(s messages.ConnectionStats) bool { return s.Active == 0 && s.Ended >= 5 })
	wantEnds(t, "tunnel", st, 5, ec{rNormal: 5}, ec{rNormal: 5})
}

// TestWireGuardExitIPv6: a server whose tunnel addresses are IPv6 only (fd99::1, the client
// fd99::2) and whose DNS answers AAAA alone. The tunnel is Up with the client's IPv6 address, and a
// fetch by name through each proxy, and a CONNECT to the IPv6 literal, reach the origin.
func TestWireGuardExitIPv6(t *testing.T) {
	origin := namedOrigin(t, "six")
	server6 := netip.MustParseAddr("fd99::1")
	srv := startWGServerFor(t, hostOf(origin), testutil.WGServerConfig{Address: server6, Peer: netip.MustParseAddr("fd99::2"),
		DNS: map[string][]netip.Addr{"origin6.test": {server6}}})
	if conf := srv.ClientConfig(); !strings.Contains(conf, "Address = fd99::2/128") || !strings.Contains(conf, "AllowedIPs = fd99::1/128") {
		t.Fatalf("the server's client file is not IPv6 only:\n%s", conf)
	}
	client := wgClient(t, wgSpec(t, "six", srv))
	tun := openTunnel(t, client, "wg:six")
	info, err := tun.Info(context.Background())
	if err != nil || info.State != messages.StateUp || !slices.Equal(info.ClientAddresses, []netip.Addr{netip.MustParseAddr("fd99::2")}) {
		t.Fatalf("info %+v, %v; want Up with client address fd99::2", info, err)
	}
	base := fmt.Sprintf("http://origin6.test:%d", wgOrigin)
	for name, c := range map[string]*http.Client{"socks5": socksClient(t, tun), "http": httpProxyClient(t, tun)} {
		if got, err := who(c, base); err != nil || got != "six" {
			t.Errorf("%s: /who by name: %q, %v", name, got, err)
		}
		if err := download(c, base, 61, 1<<20); err != nil {
			t.Errorf("%s: 1 MiB by name: %v", name, err)
		}
	}
	c, code, err := socksRequest(tun.SOCKSAddr(), socksCmdConnect, server6.String(), wgOrigin)
	if err != nil || code != socksSucceeded {
		t.Fatalf("SOCKS5 CONNECT [%s]:%d: reply %#02x, %v", server6, wgOrigin, code, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /who HTTP/1.0\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if reply, err := io.ReadAll(c); err != nil || !strings.HasPrefix(string(reply), "HTTP/1.0 200") || !strings.HasSuffix(string(reply), "\r\n\r\nsix") {
		t.Errorf("GET /who over a SOCKS5 CONNECT to the IPv6 literal: %q, %v", reply, err)
	}
}

// TestWireGuardExitCheck: wireguard_exits[].check.tcp. At a port the server forwards, the tunnel
// comes Up (and the check's connection reached the origin); at a port it does not forward (the
// server's stack refuses it), OpenTunnel fails promptly with an error that says the check failed,
// and the failed open leaves no goroutine behind (goleak, against the engine as it was after a
// tunnel had opened and closed).
func TestWireGuardExitCheck(t *testing.T) {
	accepted := make(chan struct{}, 16)
	origin := startServer(t, func(c *net.TCPConn, done <-chan struct{}) {
		select { // the health probes check again, as long as the tunnel is open
		case accepted <- struct{}{}:
		default:
		}
		echoHandler(c, done)
	})
	srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{})
	checked := func(name, target string) engine.WireGuardExitSpec {
		s := wgSpec(t, name, srv)
		s.Check.TCP = target
		return s
	}
	client := wgClient(t, checked("good", fmt.Sprintf("10.99.0.1:%d", wgOrigin)), checked("bad", "10.99.0.1:9"))

	tun := openTunnel(t, client, "wg:good")
	testutil.Await(t, accepted, 10*time.Second, "the check's connection at the origin")
	info, err := tun.Info(context.Background())
	if err != nil || info.State != messages.StateUp || info.ExitID != "wg:good" {
		t.Fatalf("info %+v, %v; want Up on wg:good", info, err)
	}
	c := mustSocks(t, tun.SOCKSAddr(), fmt.Sprintf("10.99.0.1:%d", wgOrigin))
	if err := roundTrip(c, "after the check"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}

	base := goleak.IgnoreCurrent() // the engine at rest, having opened and closed a tunnel
	baseFDs, err := openFDs()
	if err != nil {
		t.Fatal(err)
	}
	socks := testutil.ClosedAddr(t).String() // a fixed port: free again once the open failed
	spec := engine.TunnelSpec{Exit: "wg:bad", SOCKS: socks, UDPBind: "127.0.0.1", HandshakeTimeout: engine.Duration(5 * time.Second)}
	start := time.Now()
	bad, err := client.OpenTunnel(ctx, spec)
	took := time.Since(start)
	if err == nil {
		_ = bad.Close(ctx)
		t.Fatal("OpenTunnel succeeded although the check's port is not forwarded")
	}
	t.Logf("OpenTunnel with a failing check: %v after %v", err, ms(took))
	if !strings.Contains(err.Error(), "exit check failed: tcp 10.99.0.1:9") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("OpenTunnel: %q, want it to say the check tcp 10.99.0.1:9 was refused", err)
	}
	// The good tunnel, with the same key, closed just before: the server may drop the new leg's
	// first initiation as a flood, and the probe resends it after wgResend (1 s).
	if took > time.Second+wgSlack {
		t.Errorf("OpenTunnel took %v to fail on a refused check: a refusal should not wait for the handshake timeout (5 s)", took)
	}
	if c, err := net.DialTimeout("tcp", socks, time.Second); err == nil {
		c.Close()
		t.Errorf("the failed tunnel's SOCKS5 port %s still accepts", socks)
	}
	if err := goleak.Find(base); err != nil {
		t.Errorf("goroutines left by the failed open: %v", err)
	}
	poll(t, "descriptors back to the baseline", fds, func(n int) bool { return n <= baseFDs })
}

// TestWireGuardExitReopen: a tunnel closed and opened again at once on the same WireGuard exit
// (same key) three times. The server may drop the new leg's first handshake initiation (it comes
// within 20 ms of the last leg's: a flood), the leg's first probe then sends another after 1 s
// rather than wait for WireGuard's retry after 5 s: each open takes at most about a second.
func TestWireGuardExitReopen(t *testing.T) {
	origin := startServer(t, echoHandler)
	srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{})
	client := wgClient(t, wgSpec(t, "again", srv))
	var took []time.Duration
	for range 3 {
		start := time.Now()
		tun := openTunnel(t, client, "wg:again")
		took = append(took, ms(time.Since(start)))
		c := mustSocks(t, tun.SOCKSAddr(), fmt.Sprintf("10.99.0.1:%d", wgOrigin))
		if err := roundTrip(c, "again"); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := tun.Close(context.Background(), engine.WithDrainTimeout(0)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("opens took %v", took)
	if slices.Max(took) > time.Second+wgSlack {
		t.Errorf("opens took %v: want each within %v", took, time.Second+wgSlack)
	}
}

// TestWireGuardExitFirstHandshake: a tunnel to a WireGuard server comes up on its first
// handshake, well within a 2 s handshake_timeout, every time. The peer's start (persistent
// keepalive) sends an initiation just before the leg's probe forces one; a second initiation
// within 20 ms is dropped by the server (flood, or a replay of the same whitened timestamp) and
// the answer to the first is then discarded by the client, so the handshake used to wait for
// WireGuard's retry 5 s later: about half of such opens failed (device.InitiateHandshakes).
func TestWireGuardExitFirstHandshake(t *testing.T) {
	origin := startServer(t, echoHandler)
	const n = 8 // each open a fresh peer of its own server
	var specs []engine.WireGuardExitSpec
	for i := range n {
		srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{})
		specs = append(specs, engine.WireGuardExitSpec{Name: fmt.Sprintf("s%d", i), File: srv.WriteClientConfig(t)})
	}
	client := startEngine(t, engine.Config{WireGuardExits: specs})
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		tun, err := client.OpenTunnel(ctx, engine.TunnelSpec{Exit: fmt.Sprintf("wg:s%d", i), SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
			HandshakeTimeout: engine.Duration(2 * time.Second)})
		cancel()
		if err != nil {
			t.Errorf("open %d: %v after %v, want up on the first handshake", i, err, time.Since(start).Round(time.Millisecond))
			continue
		}
		_ = tun.Close(context.Background(), engine.WithDrainTimeout(-1))
	}
}
