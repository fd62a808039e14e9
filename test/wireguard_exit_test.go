package test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

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
