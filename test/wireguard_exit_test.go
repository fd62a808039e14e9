package test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// wgExitEnv is a client engine whose wireguard_exits name plain WireGuard servers (testutil.WGServer:
// no Warren code) that forward a port of their own address to a loopback origin.
type wgExitEnv struct {
	client *engine.Engine
	origin *testutil.Server
}

// wgOrigin is the port each test WireGuard server forwards to the origin.
const wgOrigin = 8080

func startWGServerFor(t testing.TB, origin string, cfg testutil.WGServerConfig) *testutil.WGServer {
	t.Helper()
	if cfg.Forward == nil {
		cfg.Forward = map[uint16]string{wgOrigin: origin}
	}
	if !cfg.Address.IsValid() {
		cfg.Address = netip.MustParseAddr("10.99.0.1")
	}
	if cfg.DNS == nil {
		cfg.DNS = map[string][]netip.Addr{"origin.test": {cfg.Address}}
	}
	return testutil.StartWGServer(t, cfg)
}

func TestWireGuardExitSmoke(t *testing.T) {
	origin := startServer(t, echoHandler)
	srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{})
	client := startEngine(t, engine.Config{WireGuardExits: []engine.WireGuardExitSpec{{Name: "one", File: srv.WriteClientConfig(t)}}})
	tun := openTunnel(t, client, "wg:one")
	d, err := proxy.SOCKS5("tcp", tun.SOCKSAddr(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial("tcp", fmt.Sprintf("origin.test:%d", wgOrigin))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c, "hello through a plain WireGuard server"); err != nil {
		t.Fatal(err)
	}
	_ = sha256.New
	_ = io.EOF
	_ = net.IPv4len
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
