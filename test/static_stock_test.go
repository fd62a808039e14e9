package test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/signaling"
)

// stockWireGuardClient is a standard WireGuard client with no Warren code at all: upstream
// wireguard-go on its own userspace netstack (tun/netstack, as wireproxy uses it), configured
// through wireguard-go's IPC as a wg-quick [Interface]/[Peer] pair would be.
func stockWireGuardClient(t *testing.T, priv signaling.Key, addr netip.Addr, exitPub string, endpoint netip.AddrPort) *netstack.Net {
	t.Helper()
	pub, err := signaling.ParseKey(exitPub)
	if err != nil {
		t.Fatal(err)
	}
	_, tnet := stockDevice(t, addr, priv, pub, endpoint.String(), netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	return tnet
}

// stockExit starts an exit with one static peer at peerAddr (inside subnet) and returns the exit's
// own tunnel address and the stock client.
func stockExit(t *testing.T, id, subnet string, peerAddr netip.Addr, egress engine.EgressConfig) (netip.Addr, *netstack.Net) {
	t.Helper()
	exitKey, _ := signaling.NewPrivateKey()
	peerKey, _ := signaling.NewPrivateKey()
	e := startExitEngine(t, id, func(c *engine.Config) {
		c.Exit.PrivateKey, c.Exit.Subnet, c.Exit.Egress = exitKey.String(), subnet, egress
		c.Exit.StaticPeers = []engine.StaticPeer{{Name: "stock", PublicKey: peerKey.Public().String(), AllowedIPs: []string{netip.PrefixFrom(peerAddr, peerAddr.BitLen()).String()}}}
	})
	x, _ := e.Exit()
	return netip.MustParsePrefix(subnet).Addr().Next(), stockWireGuardClient(t, peerKey, peerAddr, x.PublicKey, x.Endpoint)
}

// stockHTTP is an HTTP client whose connections are the stock client's, through the tunnel.
func stockHTTP(tnet *netstack.Net) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return tnet.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort(addr))
		},
		DisableKeepAlives: true,
	}, Timeout: time.Minute}
}

// hostAddress is an address of this host's own interfaces that is neither loopback nor link-local
// (of the family asked), or the zero Addr.
func hostAddress(v6 bool) netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.Is6() != v6 {
			continue
		}
		return ip
	}
	return netip.Addr{}
}

// TestStaticPeerStockClient: a standard WireGuard client with no Warren code (upstream wireguard-go
// on its own netstack) reaches, through a Warren exit, the exit host's loopback at the exit's
// tunnel address (TCP both ways, checked byte for byte and by sha256; UDP echo) and one of the
// host's own non-loopback addresses that the egress policy allows; with loopback refused, the
// exit's address is refused at once. The same over IPv6 with an IPv6 exit subnet.
func TestStaticPeerStockClient(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		name, subnet, peer, lo := "ipv4", "10.77.0.0/16", netip.MustParseAddr("10.77.200.2"), "127.0.0.1:0"
		if v6 {
			name, subnet, peer, lo = "ipv6", "fd77:0:0:1::/64", netip.MustParseAddr("fd77:0:0:1::200"), "[::1]:0"
		}
		t.Run(name, func(t *testing.T) {
			if v6 {
				ipv6Loopback(t)
			}
			host := hostAddress(v6)
			egress := engine.EgressConfig{AllowLoopback: true}
			if host.IsValid() {
				egress.Allow = []string{netip.PrefixFrom(host, host.BitLen()).String()}
			}
			exitAddr, tnet := stockExit(t, "stock-"+name, subnet, peer, egress)
			srv := httptest.NewUnstartedServer(payloadHandler)
			srv.Listener = testutil.ListenOn(t, lo)
			srv.Start()
			defer srv.Close()
			port := netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
			client := stockHTTP(tnet)
			base := "http://" + netip.AddrPortFrom(exitAddr, port).String()
			if err := download(client, base, 61, 16<<20); err != nil {
				t.Fatalf("download from the exit host's loopback: %v", err)
			}
			if err := upload(client, base, 62, 16<<20); err != nil {
				t.Fatalf("upload to the exit host's loopback: %v", err)
			}

			echo := testutil.UDPEchoServerOn(t, lo)
			uc, err := tnet.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(exitAddr, echo.Port()))
			if err != nil {
				t.Fatal(err)
			}
			defer uc.Close()
			buf := make([]byte, 2048)
			for i := range 20 {
				msg := testutil.PayloadBytes(uint64(i), 16+i*50)
				if !stockUDPRoundTrip(uc, buf, msg) {
					t.Fatalf("UDP datagram %d through the exit's address was not echoed", i)
				}
			}

			if !host.IsValid() {
				t.Logf("no non-loopback %s address on this host: the allowed-address part is skipped", name)
				return
			}
			hs := httptest.NewUnstartedServer(payloadHandler)
			hs.Listener = testutil.ListenOn(t, netip.AddrPortFrom(host, 0).String())
			hs.Start()
			defer hs.Close()
			if err := download(client, "http://"+hs.Listener.Addr().String(), 63, 4<<20); err != nil {
				t.Fatalf("download from the host's own address %s: %v", host, err)
			}
		})
	}
}

// stockUDPRoundTrip sends msg and expects it back (UDP may drop: up to 5 tries of 2 s).
func stockUDPRoundTrip(c net.Conn, buf, msg []byte) bool {
	for range 5 {
		if _, err := c.Write(msg); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == string(msg) {
			return true
		}
	}
	return false
}

// TestStaticPeerStockLoopbackRefused: without allow_loopback, a flow to the exit's own address is
// refused (a reset, at once), not left to time out.
func TestStaticPeerStockLoopbackRefused(t *testing.T) {
	exitAddr, tnet := stockExit(t, "stock-deny", "10.77.0.0/16", netip.MustParseAddr("10.77.200.3"), engine.EgressConfig{})
	ln := testutil.ListenOn(t, "127.0.0.1:0")
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(exitAddr, port))
	if err == nil {
		c.Close()
		t.Fatal("a flow to the exit host's loopback was forwarded without allow_loopback")
	}
	if !isRefused(err) {
		t.Fatalf("refused flow: %v, want connection refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the refusal took %v", d)
	}
}

// isRefused: gonet reports a reset to a dial as "connection was refused" without an errno.
func isRefused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "refused"))
}
