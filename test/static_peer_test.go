package test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// plainWireGuardClient is a standard WireGuard client with no Warren signaling: a wireguard-go
// device configured as a wg-quick [Interface]/[Peer] pair would be.
func plainWireGuardClient(t *testing.T, priv signaling.Key, addr netip.Addr, exitPub string, endpoint netip.AddrPort) *netstack.Stack {
	t.Helper()
	// AllowLoopback: this test reaches servers on 127.0.0.1, whose replies carry a loopback source.
	st, err := netstack.New(netstack.Config{Addresses: []netip.Addr{addr}, AllowLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(st, netstack.NewBind(netip.MustParseAddr("127.0.0.1")), &device.Logger{Verbosef: device.DiscardLogf, Errorf: t.Logf})
	t.Cleanup(dev.Close)
	configurePlainClient(t, dev, priv, exitPub, endpoint)
	return st
}

// configurePlainClient configures a WireGuard device through its IPC as a wg-quick client of the
// exit would be (every address routed to it) and brings it up.
func configurePlainClient(t *testing.T, dev interface {
	IpcSet(string) error
	Up() error
}, priv signaling.Key, exitPub string, endpoint netip.AddrPort) {
	t.Helper()
	pub, err := signaling.ParseKey(exitPub)
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nendpoint=%s\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n", priv.Hex(), pub.Hex(), endpoint)
	if err := dev.IpcSet(conf); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
}

func TestStaticPeerStandardWireGuard(t *testing.T) {
	srv := newPayloadServer()
	defer srv.Close()
	exitKey, _ := signaling.NewPrivateKey()
	peerKey, _ := signaling.NewPrivateKey()
	peerAddr := netip.MustParseAddr("10.77.200.2")
	e := startExitEngine(t, "static", func(c *engine.Config) {
		c.Exit.PrivateKey = exitKey.String()
		c.Exit.StaticPeers = []engine.StaticPeer{{Name: "laptop", PublicKey: peerKey.Public().String(), AllowedIPs: []string{peerAddr.String() + "/32"}}}
	})
	x, _ := e.Exit()
	if x.PublicKey != exitKey.Public().String() {
		t.Fatalf("exit announces key %s, configured %s", x.PublicKey, exitKey.Public())
	}
	st := plainWireGuardClient(t, peerKey, peerAddr, x.PublicKey, x.Endpoint)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// TCP: plain HTTP straight to the destination's address, forwarded by the exit.
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return st.DialContext(ctx, "tcp", netip.MustParseAddrPort(addr))
		},
		DisableKeepAlives: true,
	}, Timeout: time.Minute}
	u, _ := url.Parse(srv.URL)
	if err := download(client, "http://"+u.Host, 42, 4<<20); err != nil {
		t.Fatalf("download through static peer: %v", err)
	}
	if err := upload(client, "http://"+u.Host, 43, 4<<20); err != nil {
		t.Fatalf("upload through static peer: %v", err)
	}

	// UDP: datagrams to a real UDP echo server on 127.0.0.1 come back.
	uc, err := st.DialContext(ctx, "udp", testutil.UDPEchoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	_ = uc.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 20 {
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := uc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := uc.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("echo %d: %q, %v", i, buf[:n], err)
		}
	}

	// A destination the egress policy refuses is reset, not left hanging.
	start := time.Now()
	c, err := st.DialContext(ctx, "tcp", netip.MustParseAddrPort("10.1.2.3:80"))
	if err == nil {
		c.Close()
		t.Fatal("dial to a private address through the exit succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("refused flow: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %v", d)
	}
}
